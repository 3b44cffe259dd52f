"""The training loop: tf.distribute, CheckpointManager resume, TensorBoard, best-AP export.

A custom loop rather than ``model.fit``: the epoch's data order is a function of (seed,
epoch), so a run killed mid-epoch resumes at the exact step of its last checkpoint (epoch,
step, optimizer and schedule state restored) with no lost or repeated batches.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite.data import coco, pipeline, synthetic
from fptflite.evaluation import coco_eval
from fptflite.losses import loss_for_head
from fptflite.models import build_model
from fptflite.tasks.configs import TrainConfig, from_dict
from fptflite.utils.io import atomic_path, write_json_atomic

CONFIG_FILE = "config.json"
BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """"default", "mirrored" (all local GPUs, or CPU) or "multi_worker" (reads TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: default, mirrored or multi_worker")


def _worker(strategy) -> tuple[bool, int]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0), int(task_id or 0)


def ensure_data(cfg: TrainConfig) -> dict:
    """Resolves data paths; generates the synthetic set on first use."""
    paths = cfg.data.paths()
    if cfg.data.layout == "synthetic" and not os.path.isfile(paths["val_ann"]):
        logging.info("generating the synthetic dataset in %s", cfg.data.data_dir)
        synthetic.generate_dataset(cfg.data.data_dir, cfg.data.synthetic_num_train,
                                   cfg.data.synthetic_num_val, cfg.data.synthetic_seed)
    return paths


def check_config(cfg: TrainConfig, model_dir: str, is_chief: bool) -> None:
    """Writes the resolved config; refuses to resume a model dir trained with another one."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            old = from_dict(json.load(f))
        if old != cfg:
            diff = {k: (v, cfg.to_dict()[k]) for k, v in old.to_dict().items()
                    if cfg.to_dict()[k] != v}
            raise ValueError(f"{model_dir} was trained with another config (saved vs now: "
                             f"{diff}); use a new --model_dir or the same flags")
    elif is_chief:
        write_json_atomic(path, cfg.to_dict())


def learning_rate_schedule(cfg: TrainConfig, steps_per_epoch: int):
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else cfg.learning_rate, max(total - warmup, 1), alpha=0.01,
            warmup_target=cfg.learning_rate if warmup else None, warmup_steps=warmup)
    boundaries = [int(e * steps_per_epoch) for e in cfg.lr_decay_epochs]
    values = [cfg.learning_rate * cfg.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _find_bad_image(instances, order: np.ndarray, batch_index: int, batch_size: int,
                    error: Exception) -> coco.DataError:
    """Names the file and annotation behind a decode error in one training batch."""
    for i in order[batch_index * batch_size:(batch_index + 1) * batch_size]:
        inst = instances[int(i)]
        reason = coco.check_image(inst.image_path)
        if reason:
            return coco.DataError(f"image {inst.image_path} (annotation {inst.ann_id}, image "
                                  f"{inst.image_id}): {reason}; rerun with "
                                  "--set=data.skip_invalid=true to skip such images")
    return coco.DataError(f"input pipeline failed in batch {batch_index}: {error}")


def evaluate_model(model: keras.Model, cfg: TrainConfig, paths: dict, out_dir: str | None,
                   progress: bool = True, instances=None):
    """COCO keypoint AP of ``model`` on the configured validation set."""
    if instances is None:
        h, w = cfg.input_size
        instances, _ = coco.load_instances(
            paths["val_ann"], paths["val_images"], w / h, det_file=paths["val_det"],
            det_score_threshold=cfg.data.det_score_threshold)
    stats, _ = coco_eval.evaluate(
        coco_eval.keras_predictor(model), instances, paths["val_ann"], cfg.input_size, out_dir,
        cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode, progress)
    return stats


def train(cfg: TrainConfig, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          deterministic: bool = False) -> dict:
    """Trains (or resumes) ``cfg`` in ``model_dir``. Returns the last evaluation's stats."""
    cfg.validate()
    strategy = strategy or tf.distribute.get_strategy()
    is_chief, worker_id = _worker(strategy)
    os.makedirs(model_dir, exist_ok=True)
    check_config(cfg, model_dir, is_chief)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    paths = ensure_data(cfg)
    h, w = cfg.input_size
    instances, report = coco.load_instances(
        paths["train_ann"], paths["train_images"], w / h, training=True,
        skip_invalid=cfg.data.skip_invalid)
    if cfg.data.skip_invalid:
        instances = coco.drop_unreadable_images(instances, report)
    val_instances, _ = coco.load_instances(
        paths["val_ann"], paths["val_images"], w / h, det_file=paths["val_det"],
        det_score_threshold=cfg.data.det_score_threshold)

    num_workers = strategy.extra.num_workers if hasattr(strategy, "extra") else \
        getattr(strategy.extended, "_num_workers", 1)
    replicas = strategy.num_replicas_in_sync
    global_batch = cfg.batch_size_per_replica * replicas
    per_worker_batch = global_batch // num_workers
    steps = pipeline.steps_per_epoch(len(instances), per_worker_batch, num_workers)
    if steps < 1:
        raise ValueError(f"{len(instances)} training persons are fewer than one batch of "
                         f"{global_batch}")
    logging.info("training %s on %d persons (%s): %d replicas, global batch %d, %d steps/epoch",
                 cfg.model, len(instances), report.summary(), replicas, global_batch, steps)

    with strategy.scope():
        model = build_model(cfg.model, cfg.input_size, cfg.num_keypoints,
                            cfg.backbone_weights, cfg.feature_stride, cfg.neck_channels,
                            cfg.bn_momentum)
        lr = learning_rate_schedule(cfg, steps)
        opt_cls = keras.optimizers.AdamW if cfg.optimizer == "adamw" else keras.optimizers.Adam
        optimizer = opt_cls(learning_rate=lr)
        if cfg.mixed_precision:
            optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
        epoch_var = tf.Variable(0, dtype=tf.int64, name="epoch", trainable=False)
        step_var = tf.Variable(0, dtype=tf.int64, name="step_in_epoch", trainable=False)
        best_ap = tf.Variable(-1.0, dtype=tf.float64, name="best_ap", trainable=False)
    loss_obj = loss_for_head(cfg.head)
    loss_obj.reduction = keras.losses.Reduction.NONE

    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var,
                               step_in_epoch=step_var, best_ap=best_ap)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    if not is_chief:
        ckpt_dir = os.path.join(model_dir, f".worker{worker_id}_checkpoints")
    manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=3)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from %s: epoch %d, step %d of %d", latest, int(epoch_var),
                     int(step_var), steps)
    writer = (tf.summary.create_file_writer(os.path.join(model_dir, "tensorboard"))
              if is_chief else tf.summary.create_noop_writer())

    def step_fn(images, targets, weights):
        with tf.GradientTape() as tape:
            pred = tf.cast(model(images, training=True), tf.float32)
            per_elem = loss_obj(targets, pred, sample_weight=weights)
            loss = tf.reduce_sum(per_elem) / tf.cast(
                global_batch * tf.reduce_prod(tf.shape(per_elem)[1:]), tf.float32)
            scaled = optimizer.get_scaled_loss(loss) if cfg.mixed_precision else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        if cfg.mixed_precision:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batch):
        per_replica = strategy.run(step_fn, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    stats: dict = {}
    while int(epoch_var) < cfg.epochs:
        epoch, start_step = int(epoch_var), int(step_var)
        print(f"Epoch {epoch + 1}/{cfg.epochs}" + (f" (resuming at step {start_step})"
                                                    if start_step else ""), flush=True)

        def dataset_fn(ctx, epoch=epoch, start_step=start_step):
            return pipeline.train_dataset(
                instances, cfg.input_size, ctx.get_per_replica_batch_size(global_batch)
                * (replicas // ctx.num_input_pipelines), epoch, cfg.seed, cfg.sigma,
                cfg.augment, skip_batches=start_step, num_shards=ctx.num_input_pipelines,
                shard_index=ctx.input_pipeline_id)

        dist_ds = strategy.distribute_datasets_from_function(dataset_fn)
        progbar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"])
        progbar.update(start_step)
        t0, step = time.time(), start_step
        iterator = iter(dist_ds)
        while step < steps:
            try:
                batch = next(iterator)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
                order = pipeline.epoch_order(len(instances), per_worker_batch, epoch, cfg.seed,
                                             num_workers, worker_id)
                raise _find_bad_image(instances, order, step, per_worker_batch, e) from e
            loss = float(train_step(batch))
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at epoch {epoch + 1}, step {step}; last good "
                    f"checkpoint: {manager.latest_checkpoint}")
            step += 1
            step_var.assign(step)
            current_lr = float(lr(optimizer.iterations))
            progbar.update(step, [("loss", loss), ("lr", current_lr)])
            with writer.as_default(step=int(optimizer.iterations)):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/learning_rate", current_lr)
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 \
                    and step < steps:
                manager.save(checkpoint_number=int(optimizer.iterations))
        epoch_var.assign(epoch + 1)
        step_var.assign(0)
        logging.info("epoch %d done in %.1f s", epoch + 1, time.time() - t0)
        last = int(epoch_var) == cfg.epochs
        if last or (cfg.eval_every_epochs and int(epoch_var) % cfg.eval_every_epochs == 0):
            stats = evaluate_model(model, cfg, paths,
                                   os.path.join(model_dir, "eval") if is_chief else None,
                                   progress=is_chief, instances=val_instances)
            print(coco_eval.format_stats(stats, f"val after epoch {int(epoch_var)}"), flush=True)
            with writer.as_default(step=int(optimizer.iterations)):
                for k, v in stats.items():
                    tf.summary.scalar(f"val/{k}", v)
            if stats["AP"] > float(best_ap):
                best_ap.assign(stats["AP"])
                if is_chief:
                    with atomic_path(os.path.join(model_dir, BEST_MODEL)) as tmp:
                        model.save(tmp)
                    logging.info("new best AP %.4f: exported %s", stats["AP"], BEST_MODEL)
        manager.save(checkpoint_number=int(optimizer.iterations))
        writer.flush()
    if is_chief:
        with atomic_path(os.path.join(model_dir, FINAL_MODEL)) as tmp:
            model.save(tmp)
        if stats:
            write_json_atomic(os.path.join(model_dir, "final_metrics.json"),
                              {**stats, "best_AP": float(best_ap)})
    elif os.path.isdir(ckpt_dir):
        tf.io.gfile.rmtree(ckpt_dir)
    return stats
