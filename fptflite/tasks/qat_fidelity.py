"""QAT fidelity from random weights (``benchmarks/qat_fidelity.py``): does the Keras QAT
model compute what its int8 file computes, on a model that training has not smoothed?

For each BN mode, a random-weight model with a float run's config (the model swapped for
another zoo model) is fine-tuned with QAT for at least the given steps on the run's training
data (whole epochs, the trainer's own loop), converted to int8 and compared with its file on
64 val crops (``fidelity.model_fidelity``: heatmap correlation, mean keypoint shift, and the
model's own 1-ulp sensitivity).

BN modes: ``settled`` sets the random model's BN statistics to their averages over 320
training crops first (``batch_norm.settle_batch_norm``); ``initial`` keeps mean 0 /
variance 1, where a random MobileNetV2's activations vanish with depth. Each row shows the
head input's std and the heatmaps' range in int8 output steps, which tell whether the
model's heatmaps depend on the image at all.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tf_keras as keras

from fptflite import rundir
from fptflite.data import datasets
from fptflite.evaluation import fidelity as fidelity_lib
from fptflite.models.batch_norm import settle_batch_norm
from fptflite.models.zoo import build_model
from fptflite.quantization.model_io import load_model
from fptflite.tasks import configs, trainer
from fptflite.tflite.export import export_formats

BN_MODES = ("settled", "initial")

NUM_SETTLE_CROPS = 320


def activation_spread(model: keras.Model, crops: np.ndarray) -> tuple[float, float]:
    """(std of the head conv's input, mean per-map heatmap range in int8 output steps of
    1/256) of a float model on crops [N, H, W, 3]: near 0 means image-independent heatmaps."""
    head = model.get_layer("head_conv")
    feats, heatmaps = keras.Model(model.input, [head.input, model.output]).predict(
        crops, verbose=0)
    spread = heatmaps.max(axis=(1, 2)) - heatmaps.min(axis=(1, 2))  # [N, K]
    return float(feats.std()), float(spread.mean() * 256.0)


def run_mode(cfg: configs.TrainConfig, mode: str, out_dir: str, train_crops: np.ndarray,
             val_crops: np.ndarray, steps: int, steps_per_epoch: int, learning_rate: float,
             seed: int = 0) -> dict:
    """Random model -> QAT -> int8 file -> fidelity, for one BN mode.

    Args:
        cfg: the float config (its model is the one built at random).
        mode: one of ``BN_MODES``.
        out_dir: where random.keras, the QAT run (qat/) and the file (tflite/) go.
        train_crops: training crops [N, H, W, 3] (BN settling, conversion calibration).
        val_crops: the fidelity crops [M, H, W, 3].
        steps: minimum QAT steps (rounded up to whole epochs).
        steps_per_epoch: QAT steps in one epoch of the config's training set.
        learning_rate: QAT peak learning rate.
        seed: the random weights' seed.

    Returns:
        {"mode", "head_input_std", "heatmap_range_steps", "steps", "fidelity"}.
    """
    if mode not in BN_MODES:
        raise ValueError(f"unknown BN mode {mode!r}: one of {BN_MODES}")
    keras.utils.set_random_seed(seed)
    model = build_model(cfg.model, cfg.input_size, cfg.num_keypoints, None,
                        cfg.feature_stride, cfg.neck_channels, cfg.bn_momentum)
    if mode == "settled":
        settle_batch_norm(model, train_crops)
    head_std, heatmap_steps = activation_spread(model, val_crops)
    os.makedirs(out_dir, exist_ok=True)
    random_path = os.path.join(out_dir, "random.keras")
    model.save(random_path)
    epochs = math.ceil(steps / steps_per_epoch)
    qat_cfg = configs.qat_config(cfg, random_path, epochs, learning_rate)
    qat_dir = os.path.join(out_dir, "qat")
    trainer.train(qat_cfg, qat_dir)
    qat_model = load_model(rundir.best_export(qat_dir))
    exported = export_formats(os.path.join(out_dir, "tflite"), cfg.model, ["int8_qat"], model,
                              qat_model, train_crops[:200], progress=False)
    fid = fidelity_lib.check_qat_file(qat_model, exported["int8_qat"]["path"], val_crops)
    return {"mode": mode, "head_input_std": head_std, "heatmap_range_steps": heatmap_steps,
            "steps": epochs * steps_per_epoch, "fidelity": fid}


def format_table(rows: list[dict], model: str, lr: float) -> str:
    """The printed table, one row per BN mode."""
    lines = [f"Keras QAT model vs its int8 file, random-weight {model}, QAT LR {lr:g}, "
             f"{rows[0]['fidelity']['num_crops']} val crops "
             f"(goal: corr >= {fidelity_lib.MIN_HEATMAP_CORRELATION}, "
             f"shift <= {fidelity_lib.MAX_MEAN_KEYPOINT_SHIFT_PX} px)",
             "| BN statistics | head input std | heatmap range (int8 steps) | QAT steps | "
             "corr | mean shift px (95% CI) | 1-ulp floor corr / px | XLA floor corr / px | "
             "verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fid, ulp = r["fidelity"], r["fidelity"]["ulp_sensitivity"] or {}
        lo, hi = fid["mean_keypoint_shift_ci_px"]
        floor = (f"{ulp['heatmap_correlation']:.5f} / {ulp['mean_keypoint_shift_px']:.3f}"
                 if ulp else "n/a")
        xla = fid["xla_sensitivity"]
        xla_floor = f"{xla['heatmap_correlation']:.5f} / {xla['mean_keypoint_shift_px']:.3f}"
        lines.append(
            f"| {r['mode']} | {r['head_input_std']:.3g} | {r['heatmap_range_steps']:.3g} | "
            f"{r['steps']} | {fid['heatmap_correlation']:.5f} | "
            f"{fid['mean_keypoint_shift_px']:.3f} ({lo:.3f}-{hi:.3f}) | {floor} | {xla_floor} | "
            f"{'PASS' if fid['passed'] else 'FAIL'} |")
    return "\n".join(lines)


def run(model_dir: str, out_dir: str, model: str, modes: list[str], steps: int,
        learning_rate: float, seed: int = 0) -> list[dict]:
    """``run_mode`` for each BN mode on a float run's config and data (paths relative to the
    working directory, as the run recorded them). Returns the rows."""
    cfg = configs.apply_overrides(configs.load_config(model_dir), [f"model={model}"])
    h, w = cfg.input_size
    train_crops = datasets.split_calibration_crops(cfg.data, cfg.input_size, "train",
                                                   NUM_SETTLE_CROPS, seed=5)
    val_crops = datasets.split_calibration_crops(
        cfg.data, cfg.input_size, "val", fidelity_lib.DEFAULT_NUM_FIDELITY_CROPS, seed=1)
    train_persons = len(datasets.load_split(cfg.data, "train", w / h, training=True)[0])
    steps_per_epoch = train_persons // cfg.batch_size_per_replica
    return [run_mode(cfg, mode, os.path.join(out_dir, mode), train_crops, val_crops, steps,
                     steps_per_epoch, learning_rate, seed) for mode in modes]
