"""The training loop: tf.distribute, CheckpointManager resume, TensorBoard, best-AP export.

A custom loop rather than ``model.fit``: the epoch's data order is a function of (seed,
epoch), so a run killed mid-epoch resumes at the exact step of its last checkpoint (epoch,
step, optimizer and schedule state restored) with no lost or repeated batches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite import quantization
from fptflite.data import coco, pipeline, synthetic
from fptflite.evaluation import coco_eval
from fptflite.losses import loss_for_head
from fptflite.models import build_model
from fptflite.models.io import load_model, model_file_extension
from fptflite.tasks.configs import TrainConfig, from_dict
from fptflite.utils.io import atomic_path, write_json_atomic

CONFIG_FILE = "config.json"
SUMMARY_EVERY_STEPS = 10


def export_path(model_dir: str, kind: str, quantized: bool) -> str:
    """Where training exports a model: ``best`` or ``final``, .keras (float) or .h5 (QAT)."""
    return os.path.join(model_dir, kind + model_file_extension(quantized))


def load_config(model_dir: str) -> TrainConfig:
    """The resolved config a training run wrote into ``model_dir``."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a training dir: {CONFIG_FILE} not found")
    with open(path) as f:
        return from_dict(json.load(f))


def best_export(model_dir: str) -> str:
    """Path of the best-AP export of a training dir (raises if training never exported)."""
    path = export_path(model_dir, "best", load_config(model_dir).quantize)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: training in {model_dir} has not finished "
                                "an evaluation yet")
    return path


def build_training_model(cfg: TrainConfig) -> keras.Model:
    """The model a config trains: a zoo model, optionally initialised from float weights and
    wrapped for quantization-aware training (which verifies the weights carried over)."""
    model = build_model(cfg.model, cfg.input_size, cfg.num_keypoints, cfg.backbone_weights,
                        cfg.feature_stride, cfg.neck_channels, cfg.bn_momentum)
    if cfg.init_from:
        source = load_model(cfg.init_from)
        if quantization.is_quantized(source):
            raise ValueError(f"init_from {cfg.init_from} is a quantized (QAT) model; give the "
                             "float model it was trained from")
        src, dst = source.get_weights(), model.get_weights()
        if [w.shape for w in src] != [w.shape for w in dst]:
            raise ValueError(f"init_from {cfg.init_from} does not match model {cfg.model} at "
                             f"{cfg.input_size} (different architecture or keypoints)")
        model.set_weights(src)
        logging.info("initialised %s from %s", cfg.model, cfg.init_from)
    elif cfg.quantize:
        raise ValueError("quantize=true needs init_from: QAT fine-tunes a trained float model")
    if cfg.quantize:
        from fptflite.tflite.convert import config_calibration_crops

        # Ranges start from the float model's statistics on eval crops (as PTQ calibrates).
        model = quantization.quantize(model, config_calibration_crops(cfg))
        logging.info("wrapped the model for quantization-aware training; float weights verified")
    return model


def make_strategy(name: str) -> tf.distribute.Strategy:
    """"default", "mirrored" (all local GPUs, or CPU) or "multi_worker" (reads TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: default, mirrored or multi_worker")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the last evaluation's stats and the trained Keras model."""

    stats: dict
    best_ap: float
    model: keras.Model


def _worker(strategy) -> tuple[bool, int, int]:
    """(is_chief, worker index, number of workers) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, 0, 1
    spec = resolver.cluster_spec().as_dict()
    num_workers = sum(len(spec.get(k, [])) for k in ("chief", "worker"))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                        and "chief" not in spec)
    return is_chief, task_id, max(num_workers, 1)


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


def _export(model: keras.Model, path: str, is_chief: bool, worker_id: int) -> None:
    """Saves ``model`` atomically. Under MultiWorkerMirroredStrategy every worker must save
    (the save runs collectives); non-chief workers write a throwaway copy."""
    if is_chief:
        with atomic_path(path) as tmp:
            model.save(tmp)
        return
    folder = os.path.join(os.path.dirname(path), f".worker{worker_id}_export")
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, os.path.basename(path)))
    tf.io.gfile.rmtree(folder)


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


def evaluate_model(model: keras.Model, cfg: TrainConfig, paths: dict, instances,
                   out_dir: str | None, progress: bool = True):
    """COCO keypoint AP of ``model`` on the validation ``instances`` of ``paths["val_ann"]``."""
    stats, _ = coco_eval.evaluate(
        coco_eval.keras_predictor(model), instances, paths["val_ann"], cfg.input_size, out_dir,
        cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode, progress)
    return stats


def train(cfg: TrainConfig, model_dir: str, strategy: tf.distribute.Strategy | None = None,
          deterministic: bool = False, kill_after_steps: int = 0) -> TrainResult:
    """Trains (or resumes) ``cfg`` in ``model_dir``.

    Args:
        cfg: the training config.
        model_dir: checkpoints, TensorBoard logs, config.json, best.keras and final.keras.
        strategy: a tf.distribute strategy (default: the default strategy).
        deterministic: enable TF op determinism (bit-identical reruns on CPU).
        kill_after_steps: fault injection for crash-recovery tests: SIGKILL this process
            after that many optimizer steps (0: never).
    """
    cfg.validate()
    strategy = strategy or tf.distribute.get_strategy()
    is_chief, worker_id, num_workers = _worker(strategy)
    os.makedirs(model_dir, exist_ok=True)
    check_config(cfg, model_dir, is_chief)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    paths = ensure_data(cfg)
    h, w = cfg.input_size
    index = None
    if cfg.data.tfrecord_dir:  # images were validated and cut when the shards were written
        from fptflite.data import tfrecords

        index = tfrecords.read_index(cfg.data.tfrecord_dir)
        if index["input_size"] != list(cfg.input_size):
            raise ValueError(f"{cfg.data.tfrecord_dir} was prepared for input "
                             f"{index['input_size']}, the config trains at {cfg.input_size}")
        instances, report = [], coco.LoadReport(kept=index["num_records"])
    else:
        instances, report = coco.load_instances(
            paths["train_ann"], paths["train_images"], w / h, training=True,
            skip_invalid=cfg.data.skip_invalid)
        if cfg.data.skip_invalid:
            instances = coco.drop_unreadable_images(instances, report)
    val_instances, _ = coco.load_instances(
        paths["val_ann"], paths["val_images"], w / h, det_file=paths["val_det"],
        det_score_threshold=cfg.data.det_score_threshold)

    replicas = strategy.num_replicas_in_sync
    local_replicas = max(replicas // num_workers, 1)
    global_batch = cfg.batch_size_per_replica * replicas
    per_worker_batch = cfg.batch_size_per_replica * local_replicas
    if index is not None:
        steps = pipeline.tfrecord_steps_per_epoch(index, per_worker_batch, num_workers)
    else:
        steps = pipeline.steps_per_epoch(len(instances), per_worker_batch, num_workers)
    if steps < 1:
        raise ValueError(f"{report.kept} training persons are fewer than one batch of "
                         f"{global_batch} per worker")
    logging.info("training %s on %d persons (%s): %d replicas, global batch %d, %d steps/epoch",
                 cfg.model, report.kept, report.summary(), replicas, global_batch, steps)

    keras.utils.set_random_seed(cfg.seed)  # the same initial weights on every worker and rerun
    with strategy.scope():
        model = build_training_model(cfg)
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
        logging.info("resumed from %s: epoch %d, step %d of %d", latest, int(epoch_var.numpy()),
                     int(step_var.numpy()), steps)
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

    first_epoch, first_step = int(epoch_var.numpy()), int(step_var.numpy())

    def dataset_fn(ctx):
        # Batched per replica; local replicas take consecutive batches round-robin, so one
        # step consumes ``local_replicas`` batches of this worker's shard.
        if cfg.data.tfrecord_dir:
            return pipeline.tfrecord_train_dataset(
                cfg.data.tfrecord_dir, cfg.input_size,
                ctx.get_per_replica_batch_size(global_batch), first_epoch, cfg.seed, cfg.sigma,
                cfg.augment, skip_batches=first_step * local_replicas,
                num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id,
                num_epochs=max(cfg.epochs - first_epoch, 1), num_keypoints=cfg.num_keypoints)
        return pipeline.train_dataset(
            instances, cfg.input_size, ctx.get_per_replica_batch_size(global_batch),
            first_epoch, cfg.seed, cfg.sigma, cfg.augment,
            skip_batches=first_step * local_replicas, num_shards=ctx.num_input_pipelines,
            shard_index=ctx.input_pipeline_id, num_epochs=max(cfg.epochs - first_epoch, 1))

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    stats: dict = {}
    while int(epoch_var.numpy()) < cfg.epochs:
        epoch, start_step = int(epoch_var.numpy()), int(step_var.numpy())
        print(f"Epoch {epoch + 1}/{cfg.epochs}" + (f" (resuming at step {start_step})"
                                                    if start_step else ""), flush=True)
        progbar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"])
        progbar.update(start_step)
        t0, step = time.time(), start_step
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
            if kill_after_steps and int(optimizer.iterations.numpy()) >= kill_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)
            iterations = int(optimizer.iterations.numpy())
            current_lr = float(lr(iterations))
            progbar.update(step, [("loss", loss), ("lr", current_lr)])
            if iterations % SUMMARY_EVERY_STEPS == 0:
                with writer.as_default(step=iterations):
                    tf.summary.scalar("train/loss", loss)
                    tf.summary.scalar("train/learning_rate", current_lr)
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 \
                    and step < steps:
                manager.save(checkpoint_number=iterations)
        epoch_var.assign(epoch + 1)
        step_var.assign(0)
        logging.info("epoch %d done in %.1f s", epoch + 1, time.time() - t0)
        last = int(epoch_var.numpy()) == cfg.epochs
        if last or (cfg.eval_every_epochs and int(epoch_var.numpy()) % cfg.eval_every_epochs == 0):
            stats = evaluate_model(model, cfg, paths, val_instances,
                                   os.path.join(model_dir, "eval") if is_chief else None,
                                   progress=is_chief)
            title = f"val after epoch {int(epoch_var.numpy())}"
            print(coco_eval.format_stats(stats, title), flush=True)
            with writer.as_default(step=int(optimizer.iterations.numpy())):
                for k, v in stats.items():
                    tf.summary.scalar(f"val/{k}", v)
            if stats["AP"] > float(best_ap.numpy()):
                best_ap.assign(stats["AP"])
                best = export_path(model_dir, "best", cfg.quantize)
                _export(model, best, is_chief, worker_id)
                logging.info("new best AP %.4f: exported %s", stats["AP"], best)
        manager.save(checkpoint_number=int(optimizer.iterations.numpy()))
        writer.flush()
    _export(model, export_path(model_dir, "final", cfg.quantize), is_chief, worker_id)
    if is_chief:
        if stats:
            write_json_atomic(os.path.join(model_dir, "final_metrics.json"),
                              {**stats, "best_AP": float(best_ap.numpy())})
    elif os.path.isdir(ckpt_dir):
        tf.io.gfile.rmtree(ckpt_dir)
    return TrainResult(stats, float(best_ap.numpy()), model)
