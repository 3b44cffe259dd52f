"""The training loop (Orbit-like): data, model and optimizer, the step loop, evaluation.

A custom loop rather than ``model.fit``: each epoch's data is a function of (seed, epoch,
worker, replica) and every worker runs the same number of steps by construction, so a run
killed mid-epoch resumes at the exact step of its last checkpoint (epoch, step, optimizer and
schedule state restored) with no lost or repeated batches, and ends bit-identical to an
uninterrupted run under op determinism (each checkpoint first syncs the replicas' BatchNorm
statistics, see ``sync_replica_local_variables``). Several optimizer steps run per
``tf.function`` call (``steps_per_loop``); a call never crosses an epoch end, a checkpoint
step or the fault-injection step, so the checkpoint and resume semantics do not depend on it.
Every evaluation is also appended to ``eval_history.json`` (the run's learning curve), which a
resume trims to what its checkpoint has seen, so each evaluated epoch appears once.

Reading order: ``train`` -> ``Trainer.__init__`` (``load_train_data``, ``_build_state``,
``_restore``) -> ``Trainer.run`` -> ``train_epoch`` (``_loop_lengths``, ``_run_loop``) ->
``evaluate_and_export``.
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
from fptflite.data import coco, datasets, pipeline
from fptflite.evaluation import coco_eval, metrics
from fptflite.losses import loss_for
from fptflite.models import build_model, heatmap_logits_model
from fptflite.quantization.model_io import load_model
from fptflite.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    EVAL_DIR,
    EVAL_HISTORY_FILE,
    TENSORBOARD_DIR,
    export_path,
)
from fptflite.tasks.configs import TrainConfig, from_dict
from fptflite.utils.io import atomic_path, write_json_atomic

SUMMARY_EVERY_STEPS = 10


def read_eval_history(model_dir: str) -> list[dict]:
    """The evaluations of the training run in ``model_dir``, in epoch order: a list of
    {"epoch" (epochs trained), "step" (optimizer steps), the metric's stats...}; [] before
    the first evaluation."""
    path = os.path.join(model_dir, EVAL_HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return json.load(f)


def merge_evaluation(history: list[dict], entry: dict) -> list[dict]:
    """``history`` with ``entry`` added. Entries of ``entry``'s epoch or later are dropped:
    they were written before a kill by a run that then resumed from an earlier checkpoint,
    and the resumed run's evaluations replace them (no epoch twice, every epoch kept)."""
    return [h for h in history if h["epoch"] < entry["epoch"]] + [entry]


def history_until(history: list[dict], epoch: int) -> list[dict]:
    """The entries of ``history`` for at most ``epoch`` trained epochs (those a checkpoint of
    that epoch has seen; later ones came from a run killed before its next checkpoint)."""
    return [h for h in history if h["epoch"] <= epoch]


def build_training_model(cfg: TrainConfig) -> keras.Model:
    """The model a config trains: a zoo model, optionally initialised from float weights and
    wrapped for quantization-aware training (which verifies the weights carried over)."""
    model = build_model(cfg.model, cfg.input_size, cfg.num_keypoints, cfg.backbone_weights,
                        cfg.feature_stride, cfg.neck_channels, cfg.bn_momentum,
                        cfg.output_activation, cfg.sigma, cfg.output_bias)
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
        # Ranges start from the float model's statistics on eval crops (as PTQ calibrates).
        model = quantization.quantize(
            model, datasets.split_calibration_crops(cfg.data, cfg.input_size))
        logging.info("wrapped the model for quantization-aware training; float weights verified")
    return model


def configure_cpu_replicas(num: int) -> list[str]:
    """Splits the host CPU into ``num`` logical devices (for MirroredStrategy without GPUs).

    Must run before TensorFlow initialises its devices (before any op or strategy is made).

    Returns:
        The logical CPU device names.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num)])
    except RuntimeError as e:
        raise RuntimeError(f"cannot split the CPU into {num} logical devices: TensorFlow "
                           f"already initialised its devices ({e})") from e
    return [d.name for d in tf.config.list_logical_devices("CPU")][:num]


def make_strategy(name: str, cpu_replicas: int = 0) -> tf.distribute.Strategy:
    """"default", "mirrored" (all local GPUs, or CPU; with ``cpu_replicas`` = N > 0, N
    logical CPU devices) or "multi_worker" (reads TF_CONFIG)."""
    if cpu_replicas and name != "mirrored":
        raise ValueError(f"cpu_replicas needs the mirrored strategy, not {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = configure_cpu_replicas(cpu_replicas) if cpu_replicas else None
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: default, mirrored or multi_worker")


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the last evaluation's stats and the trained Keras model."""

    stats: dict
    best_ap: float
    model: keras.Model


@dataclasses.dataclass(frozen=True)
class Topology:
    """Where this process sits in the tf.distribute cluster."""

    is_chief: bool
    worker_id: int
    num_workers: int
    local_replicas: int
    replicas: int


def topology(strategy: tf.distribute.Strategy) -> Topology:
    """This process's chief flag, worker index, worker count and replica counts."""
    resolver = getattr(strategy, "cluster_resolver", None)
    is_chief, worker_id, num_workers = True, 0, 1
    if resolver is not None and resolver.task_type:
        spec = resolver.cluster_spec().as_dict()
        num_workers = max(sum(len(spec.get(k, [])) for k in ("chief", "worker")), 1)
        task_type, worker_id = resolver.task_type, int(resolver.task_id or 0)
        is_chief = task_type == "chief" or (task_type == "worker" and worker_id == 0
                                            and "chief" not in spec)
    replicas = strategy.num_replicas_in_sync
    return Topology(is_chief, worker_id, num_workers, max(replicas // num_workers, 1), replicas)


def ensure_data(cfg: TrainConfig) -> dict:
    """Resolves data paths; generates the synthetic set (COCO or MPII) on first use."""
    return datasets.ensure_data(cfg.data)


def metric_of(cfg: TrainConfig) -> metrics.Metric:
    """The metric that scores a config's data (COCO AP or MPII PCKh)."""
    return metrics.get_metric(cfg.data.dataset.metric)


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
                             f"{diff}); use a new --run_dir or the same flags")
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


def sync_replica_local_variables(variables) -> int:
    """Gives every replica's copy of each ON_READ variable its cross-replica (saved) value.

    Under tf.distribute, BatchNormalization's moving mean and variance are ON_READ variables:
    each replica updates its own copy from its own batch, and cross-replica reads (checkpoint
    saves, exports) see their mean. Restoring a checkpoint gives every replica that mean, so a
    run that kept the per-replica copies drifts from a resumed one by float rounding (measured
    on 2 logical CPUs: 81 of 207 tensors of ``final.keras``, all moving statistics, off by up
    to 9.5e-7). Called at every checkpoint, this makes the state in memory the state saved,
    so resumes are bit-identical. In exact arithmetic the replicas' mean is unchanged (the
    moving average is linear), and the trainable weights never read these copies in training.

    Args:
        variables: the variables to sync; all but distributed ON_READ ones are left alone.

    Returns:
        How many variables were synced (0 on a single replica).
    """
    synced = 0
    for v in variables:
        if isinstance(v, tf.distribute.DistributedValues) and \
                v.synchronization == tf.VariableSynchronization.ON_READ:
            v.assign(v.read_value())
            synced += 1
    return synced


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


def _find_bad_image(instances, candidates: np.ndarray, where: str,
                    error: Exception) -> coco.DataError:
    """Names the file and annotation behind a decode error among the ``candidates`` (instance
    indices of the failing steps)."""
    for i in candidates:
        inst = instances[int(i)]
        reason = coco.check_image(inst.image_path)
        if reason:
            return coco.DataError(f"image {inst.image_path} (annotation {inst.ann_id}, image "
                                  f"{inst.image_id}): {reason}; rerun with "
                                  "--set=data.skip_invalid=true to skip such images")
    return coco.DataError(f"input pipeline failed in {where}: {error}")


def evaluate_model(model: keras.Model, cfg: TrainConfig, paths: dict, instances,
                   out_dir: str | None, progress: bool = True):
    """COCO keypoint AP (or MPII PCKh, by the data layout) of ``model`` on the validation
    ``instances`` of ``paths["val_ann"]``."""
    stats, _ = metric_of(cfg).evaluate(
        coco_eval.keras_predictor(model), instances, paths["val_ann"], cfg.input_size, out_dir,
        cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode, progress)
    return stats


# --------------------------------------------------------------------------------- data


@dataclasses.dataclass
class TrainData:
    """What a run trains and evaluates on.

    Attributes:
        paths: the config's resolved data paths.
        instances: training persons (empty when reading TFRecords).
        tfrecord_index: the shards' index, or None when reading image files.
        val_instances: validation persons (GT boxes or detections).
        report: what loading the training annotations kept and skipped.
        steps: optimizer steps per epoch, the same on every worker.
    """

    paths: dict
    instances: list
    tfrecord_index: dict | None
    val_instances: list
    report: coco.LoadReport
    steps: int


def load_train_data(cfg: TrainConfig, topo: Topology) -> TrainData:
    """Loads (and validates) the annotations or the TFRecord index; counts steps per epoch."""
    paths = ensure_data(cfg)
    h, w = cfg.input_size
    source = datasets.train_source(cfg.data, cfg.input_size)
    instances, index, report = source.instances, source.tfrecord_index, source.report
    if index is not None:
        steps = pipeline.tfrecord_steps_per_epoch(index, cfg.batch_size_per_replica,
                                                  topo.num_workers, topo.local_replicas)
    else:
        steps = pipeline.steps_per_epoch(len(instances), cfg.batch_size_per_replica,
                                         topo.num_workers, topo.local_replicas)
    global_batch = cfg.batch_size_per_replica * topo.replicas
    if steps < 1:
        raise ValueError(f"{report.kept} training persons are fewer than one global batch of "
                         f"{global_batch}")
    val_instances, _ = datasets.load_split(cfg.data, "val", w / h)
    logging.info("training %s on %d persons (%s): %d replicas on %d workers, global batch %d, "
                 "%d steps/epoch, %d persons dropped per epoch", cfg.model, report.kept,
                 report.summary(), topo.replicas, topo.num_workers, global_batch, steps,
                 report.kept - steps * global_batch)
    return TrainData(paths, instances, index, val_instances, report, steps)


def make_dataset_fn(cfg: TrainConfig, data: TrainData, topo: Topology, first_epoch: int,
                    first_step: int, with_ids: bool = False):
    """The ``distribute_datasets_from_function`` callable: per-replica batches of epochs
    ``first_epoch`` .. ``cfg.epochs - 1``, skipping the ``first_step`` steps already trained
    (``with_ids``: plus each person's id, see ``pipeline.train_dataset``)."""
    common = dict(input_size=cfg.input_size, batch_size=cfg.batch_size_per_replica,
                  epoch=first_epoch, seed=cfg.seed, sigma=cfg.sigma, augment=cfg.augment,
                  with_ids=with_ids,
                  skip_batches=first_step * topo.local_replicas,
                  num_epochs=max(cfg.epochs - first_epoch, 1),
                  replicas_per_shard=topo.local_replicas)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        if ctx.get_per_replica_batch_size(cfg.batch_size_per_replica * topo.replicas) != \
                cfg.batch_size_per_replica or ctx.num_input_pipelines != topo.num_workers:
            raise ValueError(f"unexpected input context {ctx} for topology {topo}")
        shard = dict(num_shards=ctx.num_input_pipelines, shard_index=ctx.input_pipeline_id)
        if data.tfrecord_index is not None:
            return pipeline.tfrecord_train_dataset(cfg.data.tfrecord_dir, **common, **shard,
                                                   num_keypoints=cfg.num_keypoints)
        return pipeline.train_dataset(data.instances, **common, **shard)

    return dataset_fn


# --------------------------------------------------------------------------------- trainer


class Trainer:
    """One training run in ``model_dir``: builds or restores its state, then ``run()``s."""

    def __init__(self, cfg: TrainConfig, model_dir: str,
                 strategy: tf.distribute.Strategy | None = None, deterministic: bool = False,
                 kill_after_steps: int = 0):
        self.cfg = cfg.validate()
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.topo = topology(self.strategy)
        self.kill_after_steps = kill_after_steps
        os.makedirs(model_dir, exist_ok=True)
        check_config(cfg, model_dir, self.topo.is_chief)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        if cfg.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        self.data = load_train_data(cfg, self.topo)
        self.global_batch = cfg.batch_size_per_replica * self.topo.replicas
        self._build_state()
        self._restore()
        self.writer = (tf.summary.create_file_writer(os.path.join(model_dir, TENSORBOARD_DIR))
                       if self.topo.is_chief else tf.summary.create_noop_writer())
        self._loop_fn = self._make_loop_fn()
        self.stats: dict = {}

    # ----------------------------------------------------------- model and optimizer

    def _build_state(self) -> None:
        """Model (and its logits view for RCE), optimizer, loss, counters, checkpointing."""
        cfg, topo = self.cfg, self.topo
        keras.utils.set_random_seed(cfg.seed)  # the same initial weights on every worker
        self.loss_obj = loss_for(cfg.loss_name)
        self.loss_obj.reduction = keras.losses.Reduction.NONE
        with self.strategy.scope():
            self.model = build_training_model(cfg)
            # RCE is computed from the logits of the same layers; exports keep the sigmoid.
            self.train_model = (heatmap_logits_model(self.model)
                                if getattr(self.loss_obj, "from_logits", False) else self.model)
            self.lr = learning_rate_schedule(cfg, self.data.steps)
            opt_cls = keras.optimizers.AdamW if cfg.optimizer == "adamw" else \
                keras.optimizers.Adam
            self.optimizer = opt_cls(learning_rate=self.lr)
            if cfg.mixed_precision:
                self.optimizer = keras.mixed_precision.LossScaleOptimizer(self.optimizer)
            self.epoch_var = tf.Variable(0, dtype=tf.int64, name="epoch", trainable=False)
            self.step_var = tf.Variable(0, dtype=tf.int64, name="step_in_epoch",
                                        trainable=False)
            self.best_ap = tf.Variable(-1.0, dtype=tf.float64, name="best_ap", trainable=False)
        self.ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                        epoch=self.epoch_var, step_in_epoch=self.step_var,
                                        best_ap=self.best_ap)
        self.ckpt_dir = os.path.join(self.model_dir, CHECKPOINT_DIR)
        own_dir = self.ckpt_dir if topo.is_chief else os.path.join(
            self.model_dir, f".worker{topo.worker_id}_checkpoints")
        self.manager = tf.train.CheckpointManager(self.ckpt, own_dir, max_to_keep=3)

    def _restore(self) -> None:
        latest = tf.train.latest_checkpoint(self.ckpt_dir)
        if latest:
            self.ckpt.restore(latest).assert_existing_objects_matched()
            logging.info("resumed from %s: epoch %d, step %d of %d", latest, self.epoch,
                         self.step_in_epoch, self.data.steps)
        history = read_eval_history(self.model_dir)
        kept = history_until(history, self.epoch)
        if self.topo.is_chief and kept != history:
            write_json_atomic(os.path.join(self.model_dir, EVAL_HISTORY_FILE), kept)

    def save_checkpoint(self) -> None:
        """Saves the state (every worker takes part); first gives each replica the saved
        value of its replica-local variables, so continuing equals resuming bit for bit."""
        sync_replica_local_variables(self.model.variables)
        self.manager.save(checkpoint_number=self.iterations)

    @property
    def epoch(self) -> int:
        return int(self.epoch_var.numpy())

    @property
    def step_in_epoch(self) -> int:
        return int(self.step_var.numpy())

    @property
    def iterations(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # ----------------------------------------------------------------- the step loop

    def _make_loop_fn(self):
        """tf.function(iterator, num_steps) -> mean loss of ``num_steps`` optimizer steps."""
        model, optimizer, loss_obj = self.train_model, self.optimizer, self.loss_obj
        mixed, global_batch, strategy = self.cfg.mixed_precision, self.global_batch, \
            self.strategy

        def step_fn(images, targets, weights):
            with tf.GradientTape() as tape:
                pred = tf.cast(model(images, training=True), tf.float32)
                per_elem = loss_obj(targets, pred, sample_weight=weights)
                loss = tf.reduce_sum(per_elem) / tf.cast(
                    global_batch * tf.reduce_prod(tf.shape(per_elem)[1:]), tf.float32)
                scaled = optimizer.get_scaled_loss(loss) if mixed else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            if mixed:
                grads = optimizer.get_unscaled_gradients(grads)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        @tf.function
        def loop_fn(iterator, num_steps):
            total = tf.constant(0.0, tf.float32)
            for _ in tf.range(num_steps):
                per_replica = strategy.run(step_fn, args=next(iterator))
                total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            return total / tf.cast(num_steps, tf.float32)

        return loop_fn

    def _make_iterator(self):
        fn = make_dataset_fn(self.cfg, self.data, self.topo, self.epoch, self.step_in_epoch)
        return iter(self.strategy.distribute_datasets_from_function(fn))

    def _loop_lengths(self, step: int) -> int:
        """Steps the next loop call runs from ``step``: at most ``steps_per_loop``, never past
        the epoch end, the next checkpoint step or the fault-injection step."""
        n = min(self.cfg.steps_per_loop, self.data.steps - step)
        every = self.cfg.checkpoint_every_steps
        if every:
            n = min(n, every - step % every)
        if self.kill_after_steps > self.iterations:
            n = min(n, self.kill_after_steps - self.iterations)
        return n

    def _run_loop(self, iterator, epoch: int, step: int, n: int) -> float:
        """Runs ``n`` steps; names the bad image or the shortfall when the data fails."""
        try:
            loss = float(self._loop_fn(iterator, tf.constant(n, tf.int32)))
        except (tf.errors.OutOfRangeError, tf.errors.FailedPreconditionError,
                StopIteration) as e:
            if isinstance(e, tf.errors.FailedPreconditionError) and \
                    "expected to contain" not in str(e):
                raise
            raise coco.DataError(
                f"worker {self.topo.worker_id} ran out of training data in epoch {epoch + 1} "
                f"within steps {step}..{step + n - 1} of {self.data.steps}: the data holds "
                "fewer persons than its annotations or TFRecord index say") from e
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as e:
            if not self.data.instances:
                raise
            b, local = self.cfg.batch_size_per_replica, self.topo.local_replicas
            order = pipeline.epoch_order(len(self.data.instances), b, epoch, self.cfg.seed,
                                         self.topo.num_workers, self.topo.worker_id, local)
            raise _find_bad_image(self.data.instances,
                                  order[step * local * b:(step + n) * local * b],
                                  f"epoch {epoch + 1}, steps {step}..{step + n - 1}", e) from e
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss} in epoch {epoch + 1} before step {step + n}; last good "
                f"checkpoint: {self.manager.latest_checkpoint}")
        return loss

    def _write_train_summary(self, before: int, loss: float) -> None:
        if self.iterations // SUMMARY_EVERY_STEPS > before // SUMMARY_EVERY_STEPS:
            with self.writer.as_default(step=self.iterations):
                tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/learning_rate", float(self.lr(self.iterations)))

    def train_epoch(self, iterator) -> None:
        """Trains the rest of the current epoch, checkpointing every
        ``checkpoint_every_steps`` steps inside it (the epoch end is checkpointed by ``run``)."""
        epoch, steps, step = self.epoch, self.data.steps, self.step_in_epoch
        print(f"Epoch {epoch + 1}/{self.cfg.epochs}" + (f" (resuming at step {step})"
                                                         if step else ""), flush=True)
        progbar = keras.utils.Progbar(steps, stateful_metrics=["loss", "lr"])
        progbar.update(step)
        t0 = time.time()
        while step < steps:
            n = self._loop_lengths(step)
            before = self.iterations
            loss = self._run_loop(iterator, epoch, step, n)
            step += n
            self.step_var.assign(step)
            if self.kill_after_steps and self.iterations >= self.kill_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)
            progbar.update(step, [("loss", loss), ("lr", float(self.lr(self.iterations)))])
            self._write_train_summary(before, loss)
            every = self.cfg.checkpoint_every_steps
            if every and step % every == 0 and step < steps:
                self.save_checkpoint()
        self.epoch_var.assign(epoch + 1)
        self.step_var.assign(0)
        logging.info("epoch %d done in %.1f s", epoch + 1, time.time() - t0)

    # ------------------------------------------------------------ evaluation and export

    def _export(self, kind: str) -> str:
        path = export_path(self.model_dir, kind, self.cfg.quantize)
        _export(self.model, path, self.topo.is_chief, self.topo.worker_id)
        return path

    def evaluate_and_export(self) -> None:
        """Validation AP after the current epoch (to stdout and TensorBoard); exports
        ``best`` when the AP improved."""
        topo = self.topo
        self.stats = evaluate_model(self.model, self.cfg, self.data.paths,
                                    self.data.val_instances,
                                    os.path.join(self.model_dir, EVAL_DIR) if topo.is_chief
                                    else None, progress=topo.is_chief)
        metric = metric_of(self.cfg)
        print(metric.format_stats(self.stats, f"val after epoch {self.epoch}"), flush=True)
        with self.writer.as_default(step=self.iterations):
            for k, v in self.stats.items():
                tf.summary.scalar(f"val/{k}", v)
        if topo.is_chief:
            write_json_atomic(os.path.join(self.model_dir, EVAL_HISTORY_FILE), merge_evaluation(
                read_eval_history(self.model_dir),
                {"epoch": self.epoch, "step": self.iterations, **self.stats}))
        score = self._agreed(metric.value(self.stats))  # COCO AP or MPII PCKh
        if score > float(self.best_ap.numpy()):
            self.best_ap.assign(score)
            logging.info("new best AP/PCKh %.4f: exported %s", score,
                         self._export("best"))

    def _agreed(self, score: float) -> float:
        """``score`` averaged over all replicas of all workers. Every worker evaluates; their
        scores could differ in the last bit (e.g. GPUs picking different kernels), and a
        worker skipping an export (which runs collectives) would leave the others waiting."""
        if self.topo.num_workers == 1:
            return score
        per_replica = self.strategy.run(lambda: tf.constant(score, tf.float64))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))

    def _eval_due(self) -> bool:
        every = self.cfg.eval_every_epochs
        return self.epoch == self.cfg.epochs or bool(every and self.epoch % every == 0)

    def finish(self) -> TrainResult:
        """Exports ``final``, writes the metrics (of the last evaluation: this process's, or
        the history's when the run was killed after it); non-chief workers drop their
        scratch."""
        self._export("final")
        if self.topo.is_chief:
            history = read_eval_history(self.model_dir)
            if not self.stats and history and history[-1]["epoch"] == self.cfg.epochs:
                self.stats = {k: v for k, v in history[-1].items() if k not in ("epoch", "step")}
            if self.stats:
                write_json_atomic(os.path.join(self.model_dir, "final_metrics.json"),
                                  {**self.stats, "best_AP": float(self.best_ap.numpy())})
        elif os.path.isdir(self.manager.directory):
            tf.io.gfile.rmtree(self.manager.directory)
        return TrainResult(self.stats, float(self.best_ap.numpy()), self.model)

    def time_steps(self, num_steps: int) -> tuple[float, float]:
        """Cost probe: one loop call of 1 step (it traces the loop), then one of
        ``num_steps`` steps, from the current state, without checkpointing. It trains the
        model: for throwaway trainers (e.g. in a scratch dir) only.

        Returns:
            (seconds of the first call, tracing included; seconds per step of the second).
        """
        num_steps = min(num_steps, self.data.steps - self.step_in_epoch - 1)
        if num_steps < 1:
            raise ValueError(f"time_steps needs 2 steps left in the epoch, {self.data.steps} "
                             f"steps per epoch and {self.step_in_epoch} done")
        iterator = self._make_iterator()
        t0 = time.perf_counter()
        self._run_loop(iterator, self.epoch, self.step_in_epoch, 1)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._run_loop(iterator, self.epoch, self.step_in_epoch + 1, num_steps)
        return first, (time.perf_counter() - t0) / num_steps

    def run(self) -> TrainResult:
        """Trains the remaining epochs (evaluating and checkpointing after each), exports."""
        iterator = self._make_iterator() if self.epoch < self.cfg.epochs else None
        while self.epoch < self.cfg.epochs:
            self.train_epoch(iterator)
            if self._eval_due():
                self.evaluate_and_export()
            self.save_checkpoint()
            self.writer.flush()
        return self.finish()


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
    return Trainer(cfg, model_dir, strategy, deterministic, kill_after_steps).run()
