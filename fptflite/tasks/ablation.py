"""The paper's two claims as a reproducible ablation on the synthetic COCO set.

Claim (a): RCE on sigmoid heatmaps trains faster and ends more accurate than MSE.
Claim (b): a head on low-resolution features (depth_to_space, no deconvolutions) matches the
deconvolution head at a fraction of the MACs.

Every variant trains on the same data with the same seed, input size, backbone (MobileNetV2
0.5), schedule, augmentation and number of epochs; only the head and the loss change:

- ``fasterpose_rce``: FasterPose head on stride-32 features (r = 8), sigmoid, RCE.
- ``fasterpose_mse``: the same head with a linear output, MSE.
- ``simplebaseline_mse``: SimpleBaseline's three 4x4 deconvolutions, linear output, MSE.
- ``simplebaseline_rce``: the deconvolution head with a sigmoid output, RCE.
- ``fasterpose_s16_neck_rce``: FasterPose on stride-16 features with a 3x3 neck (r = 4).

RCE is computed from the logits (the sigmoid's input); the output conv's bias starts at the
logit of the mean target for RCE and at 0 for MSE, in every head, so each loss starts from its
neutral prediction. After every epoch the float model's COCO AP is measured on the validation
persons (ground-truth boxes, no flip test); at the end each model is converted to a fully
integer .tflite (PTQ, calibrated on 64 training crops) whose AP and single-image latency
(LiteRT, XNNPACK) are measured. The budget fixes the number of epochs before training from
a timed calibration of every variant's training step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from fptflite.data import coco, pipeline, synthetic
from fptflite.evaluation import coco_eval
from fptflite.losses import RegressiveCrossEntropy, WeightedMSE
from fptflite.models import build_model, count_macs, get_entry
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

_PRIOR = 2.0 * math.pi * 2.0**2 / (64 * 48)  # the zoo's FasterPose bias init: mean target
LOGIT_PRIOR = math.log(_PRIOR / (1 - _PRIOR))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One trained model of the ablation."""

    name: str
    model: str  # zoo name
    loss: str  # "rce" (sigmoid output) or "mse" (linear output)
    feature_stride: int = 32
    neck_channels: int = 0

    @property
    def head(self) -> str:
        return get_entry(self.model).head


VARIANTS: tuple[Variant, ...] = (
    Variant("fasterpose_rce", "fasterpose_mnv2_050", "rce"),
    Variant("fasterpose_mse", "fasterpose_mnv2_050", "mse"),
    Variant("simplebaseline_mse", "simplebaseline_mnv2_050", "mse"),
    Variant("simplebaseline_rce", "simplebaseline_mnv2_050", "rce"),
    Variant("fasterpose_s16_neck_rce", "fasterpose_mnv2_050", "rce", 16, 64),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """What all variants share."""

    input_size: tuple[int, int] = (128, 128)
    num_train_images: int = 600
    num_val_images: int = 80
    data_seed: int = 0
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 5e-3
    warmup_epochs: float = 0.5
    bn_momentum: float = 0.9
    sigma: float = 2.0
    augment: pipeline.AugmentConfig = pipeline.AugmentConfig(
        scale_factor=0.25, rotation_deg=30.0, rotation_prob=0.5, half_body_prob=0.1)
    num_calibration: int = 64
    latency_runs: int = 30
    latency_threads: int = 1
    max_epochs: int = 60
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)


def get_variant(name: str) -> Variant:
    for v in VARIANTS:
        if v.name == name:
            return v
    raise ValueError(f"unknown variant {name!r}; choose from {[v.name for v in VARIANTS]}")


def build_variant(v: Variant, s: Settings) -> tuple[keras.Model, keras.Model]:
    """(logits model [N, H/4, W/4, K] linear, inference model) sharing all weights.

    The inference model ends in a sigmoid for RCE variants and is the logits model for MSE.
    """
    model = build_model(v.model, s.input_size, bn_momentum=s.bn_momentum,
                        feature_stride=v.feature_stride, neck_channels=v.neck_channels)
    if v.head == "fasterpose":
        out_conv = model.get_layer("head_conv")
        logits = keras.Model(model.input, model.get_layer("depth_to_space").output,
                             name=f"{v.name}_logits")
    else:
        out_conv = model.get_layer("heatmaps")
        logits = keras.Model(model.input, model.output, name=f"{v.name}_logits")
    bias = out_conv.bias
    bias.assign(tf.fill(bias.shape, LOGIT_PRIOR if v.loss == "rce" else 0.0))
    if v.loss == "mse":
        return logits, logits
    if v.head == "fasterpose":
        return logits, model
    prob = keras.layers.Activation("sigmoid", name="heatmaps_sigmoid")(logits.output)
    return logits, keras.Model(model.input, prob, name=v.name)


def _loss(v: Variant) -> keras.losses.Loss:
    if v.loss == "rce":
        return RegressiveCrossEntropy(from_logits=True)
    if v.loss == "mse":
        return WeightedMSE()
    raise ValueError(f"unknown loss {v.loss!r}")


def _lr_schedule(s: Settings, steps_per_epoch: int, epochs: int):
    warmup = int(s.warmup_epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(epochs * steps_per_epoch - warmup, 1), alpha=0.01,
        warmup_target=s.learning_rate, warmup_steps=warmup)


class _Trainer:
    """A variant's models, optimizer and compiled train step."""

    def __init__(self, v: Variant, s: Settings, steps_per_epoch: int, epochs: int):
        keras.utils.set_random_seed(s.seed)
        self.variant = v
        self.logits, self.inference = build_variant(v, s)
        self.optimizer = keras.optimizers.Adam(_lr_schedule(s, steps_per_epoch, epochs))
        loss_obj = _loss(v)
        model, opt = self.logits, self.optimizer

        @tf.function
        def step(images, targets, weights):
            with tf.GradientTape() as tape:
                loss = loss_obj(targets, model(images, training=True), sample_weight=weights)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        self.step = step


@dataclasses.dataclass
class Data:
    """The ablation's synthetic data, loaded once."""

    paths: dict
    train: list
    val: list


def prepare_data(out_dir: str, s: Settings) -> Data:
    """Generates (once) and loads the synthetic COCO set under ``out_dir/data``."""
    root = os.path.join(out_dir, "data")
    ann = os.path.join(root, "annotations", "person_keypoints_val.json")
    if os.path.isfile(ann):
        paths = {"train_ann": os.path.join(root, "annotations", "person_keypoints_train.json"),
                 "train_images": os.path.join(root, "images", "train"), "val_ann": ann,
                 "val_images": os.path.join(root, "images", "val")}
    else:
        paths = synthetic.generate_dataset(root, s.num_train_images, s.num_val_images,
                                           s.data_seed, progress=False)
    aspect = s.input_size[1] / s.input_size[0]
    train, _ = coco.load_instances(paths["train_ann"], paths["train_images"], aspect,
                                   training=True)
    val, _ = coco.load_instances(paths["val_ann"], paths["val_images"], aspect)
    return Data(paths, train, val)


def _batches(data: Data, s: Settings, epochs: int):
    return iter(pipeline.train_dataset(data.train, s.input_size, s.batch_size, 0, s.seed,
                                       s.sigma, s.augment, num_epochs=epochs))


def calibrate(data: Data, s: Settings, timed_steps: int = 3) -> dict[str, dict[str, float]]:
    """Seconds per training step and per eval crop of each variant (throwaway models)."""
    out = {}
    batch = next(_batches(data, s, 1))
    for name in s.variants:
        t = _Trainer(get_variant(name), s, 10, 1)
        t0 = time.perf_counter()
        t.step(*batch)
        trace = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(timed_steps):
            t.step(*batch)
        step_s = (time.perf_counter() - t0) / timed_steps
        predict = coco_eval.keras_predictor(t.inference)
        images = batch[0].numpy()
        predict(images, None)
        t0 = time.perf_counter()
        predict(images, None)
        out[name] = {"trace_s": trace, "step_s": step_s,
                     "crop_s": (time.perf_counter() - t0) / len(images)}
    return out


def choose_epochs(budget_s: float, costs: dict[str, dict[str, float]], steps_per_epoch: int,
                  num_val: int, max_epochs: int, per_variant_fixed_s: float = 45.0) -> int:
    """Largest epoch count whose estimated total fits ``budget_s`` (at least 1).

    Per variant: fixed cost (graph tracing + int8 conversion, evaluation and latency, about
    ``per_variant_fixed_s`` s plus the measured trace) and per epoch: the training steps plus
    an evaluation (crops, plus about 1 s of decoding and COCOeval).
    """
    fixed = sum(per_variant_fixed_s + 2 * c["trace_s"] for c in costs.values())
    per_epoch = sum(c["step_s"] * steps_per_epoch + c["crop_s"] * num_val + 1.0
                    for c in costs.values())
    return int(max(1, min(max_epochs, (budget_s - fixed) // per_epoch)))


def _evaluate_ap(predictor, data: Data, s: Settings) -> float:
    stats, _ = coco_eval.evaluate(predictor, data.val, data.paths["val_ann"], s.input_size,
                                  batch_size=64, flip_test=False, progress=False)
    return float(stats["AP"])


def train_variant(v: Variant, data: Data, s: Settings, epochs: int, log=print
                  ) -> tuple[dict, keras.Model]:
    """Trains one variant; returns (its result row without int8 figures, inference model)."""
    steps = pipeline.steps_per_epoch(len(data.train), s.batch_size)
    t = _Trainer(v, s, steps, epochs)
    batches = _batches(data, s, epochs)
    t.step.get_concrete_function(*batches.element_spec)  # trace outside the timed loop
    predictor = coco_eval.keras_predictor(t.inference)
    epoch_ap, train_s = [], 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = t.step(*next(batches))
        train_s += time.perf_counter() - t0
        epoch_ap.append(_evaluate_ap(predictor, data, s))
        log(f"  {v.name}: epoch {epoch + 1}/{epochs} loss {float(loss):.5f} "
            f"AP {epoch_ap[-1]:.4f} ({train_s:.0f} s training)")
    row = {"name": v.name, "head": v.head, "loss": v.loss, "feature_stride": v.feature_stride,
           "neck_channels": v.neck_channels, "model": v.model, "epoch_ap": epoch_ap,
           "params": int(t.inference.count_params()), "macs": int(count_macs(t.inference)),
           "train_s": round(train_s, 2)}
    return row, t.inference


def int8_figures(model: keras.Model, data: Data, s: Settings, path: str) -> dict:
    """Converts ``model`` to int8 PTQ at ``path``; its AP and median latency (ms)."""
    from fptflite.tflite import benchmark, convert, runner

    crops = convert.calibration_crops(data.train, s.input_size, s.num_calibration, s.seed)
    write_bytes_atomic(path, convert.convert(model, "int8_ptq", crops))
    ap = _evaluate_ap(runner.TFLitePredictor(path, s.input_size, num_threads=2), data, s)
    ms = benchmark.time_tflite(path, s.latency_threads, runs=s.latency_runs)
    return {"int8_ap": ap, "int8_ms": float(np.median(ms))}


def run(out_dir: str, budget_minutes: float = 30.0, s: Settings = Settings(),
        epochs: int | None = None, log=print) -> dict:
    """Runs the ablation; writes ablation.json, ablation.md and convergence.png.

    Args:
        out_dir: output folder (the data is generated under ``out_dir/data`` once).
        budget_minutes: the whole run (data, calibration, training, int8) should fit this.
        s: the shared settings.
        epochs: force this many epochs instead of deriving them from the budget (and skip
            the timing calibration).

    Returns:
        The JSON-ready result ({"variants": [...], "epochs", "settings", ...}).
    """
    start = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    data = prepare_data(out_dir, s)
    steps = pipeline.steps_per_epoch(len(data.train), s.batch_size)
    costs, epochs_from = None, "flag" if epochs else "budget"
    if epochs is None:
        costs = calibrate(data, s)
        epochs = choose_epochs(budget_minutes * 60 - (time.perf_counter() - start), costs,
                               steps, len(data.val), s.max_epochs)
    log(f"ablation: {len(data.train)} training / {len(data.val)} val persons, {steps} steps "
        f"per epoch, {epochs} epochs for a {budget_minutes:g} min budget")
    rows = []
    for name in s.variants:
        v = get_variant(name)
        row, model = train_variant(v, data, s, epochs, log)
        row.update(int8_figures(model, data, s, os.path.join(out_dir, "tflite",
                                                             f"{v.name}_int8_ptq.tflite")))
        rows.append(row)
        log(f"  {v.name}: int8 AP {row['int8_ap']:.4f}, {row['int8_ms']:.2f} ms")
        keras.backend.clear_session()
    result = {"variants": rows, "epochs": epochs, "epochs_from": epochs_from,
              "budget_minutes": budget_minutes,
              "total_s": round(time.perf_counter() - start, 1), "calibration": costs,
              "settings": {**dataclasses.asdict(s), "num_train_persons": len(data.train),
                           "num_val_persons": len(data.val), "steps_per_epoch": steps}}
    write_outputs(out_dir, result)
    return result


def format_table(result: dict) -> str:
    """The markdown table of a result."""
    lines = ["| variant | head | loss | stride | params (M) | MACs (M) | AP first / last epoch "
             "| best AP | train s | int8 AP | int8 ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["variants"]:
        ap = r["epoch_ap"]
        lines.append(
            f"| {r['name']} | {r['head']} | {r['loss']} | {r['feature_stride']} | "
            f"{r['params'] / 1e6:.3f} | {r['macs'] / 1e6:.1f} | {ap[0]:.3f} / {ap[-1]:.3f} | "
            f"{max(ap):.3f} | {r['train_s']:.0f} | {r['int8_ap']:.3f} | {r['int8_ms']:.2f} |")
    return "\n".join(lines)


def plot_convergence(result: dict, path: str) -> None:
    """AP against epoch, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in result["variants"]:
        ax.plot(range(1, len(r["epoch_ap"]) + 1), r["epoch_ap"], marker="o", markersize=3,
                label=f"{r['name']} ({r['macs'] / 1e6:.0f} M MACs)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val AP (float, GT boxes)")
    ax.set_title(f"Ablation, synthetic COCO, seed {result['settings']['seed']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(out_dir: str, result: dict) -> None:
    s = result["settings"]
    header = (f"# FasterPose ablation\n\nSynthetic COCO, {s['num_train_persons']} training / "
              f"{s['num_val_persons']} val persons, input {s['input_size'][0]}x"
              f"{s['input_size'][1]}, MobileNetV2 0.5, {result['epochs']} epochs, seed "
              f"{s['seed']}, Adam {s['learning_rate']} cosine; AP on GT boxes without flip "
              f"test; int8 = full-integer PTQ, latency = median of {s['latency_runs']} runs on "
              f"{s['latency_threads']} thread(s). Total {result['total_s']:.0f} s.\n\n")
    write_json_atomic(os.path.join(out_dir, "ablation.json"), result)
    write_bytes_atomic(os.path.join(out_dir, "ablation.md"),
                       (header + format_table(result) + "\n").encode())
    plot_convergence(result, os.path.join(out_dir, "convergence.png"))


def load_result(out_dir: str) -> dict:
    with open(os.path.join(out_dir, "ablation.json")) as f:
        return json.load(f)


def settings_with(**kw) -> Settings:
    """``Settings`` with fields replaced (tuples accepted as lists)."""
    fixed = {k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
             for k, v in kw.items()}
    return dataclasses.replace(Settings(), **fixed)
