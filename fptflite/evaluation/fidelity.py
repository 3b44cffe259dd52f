"""Fidelity of a converted file to the Keras model it came from, on the same crops.

For an int8_qat file the reference is the Keras QAT model (its fake-quant simulation): if the
simulation matches the converter, the two agree to a fraction of an int8 step, and QAT
trained against what ships. For the other formats the reference is the float model.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite.codec import HEATMAP_STRIDE, decode_heatmaps
from fptflite.evaluation import bootstrap
from fptflite.evaluation.parity import heatmap_correlation
from fptflite.models.batch_norm import batch_norm_layers
from fptflite.quantization import quantize_scope
from fptflite.tflite import divergence
from fptflite.tflite.runner import TFLitePredictor
from fptflite.utils.io import write_json_atomic

# What "the simulation is the file" means: on the same eval crops.
MIN_HEATMAP_CORRELATION = 0.999
MAX_MEAN_KEYPOINT_SHIFT_PX = 0.1
DEFAULT_NUM_FIDELITY_CROPS = 64


def compare_heatmaps(reference: np.ndarray, candidate: np.ndarray,
                     decode: str = "dark") -> dict[str, float]:
    """Heatmap correlation and keypoint shift between two models' heatmaps of the same crops.

    Args:
        reference, candidate: heatmaps [N, h, w, K] of the same N crops.
        decode: the keypoint decoder (``fptflite.codec.decode_heatmaps``).

    Returns:
        {"heatmap_correlation" (mean Pearson r over the N*K maps), "mean_keypoint_shift_px"
        and "max_keypoint_shift_px" (decoded keypoints, crop pixels),
        "mean_keypoint_shift_ci_px" (95% bootstrap interval of the mean over the crops: how
        much the mean would move on other crops), "mean_abs_diff", "num_crops"}, plus
        ``shift_breakdown``'s figures.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"heatmap shapes differ: {reference.shape} vs {candidate.shape}")
    ref_xy, _ = decode_heatmaps(reference, decode)
    cand_xy, _ = decode_heatmaps(candidate, decode)
    shift = np.linalg.norm(cand_xy - ref_xy, axis=-1) * HEATMAP_STRIDE
    report = {
        "heatmap_correlation": heatmap_correlation(reference, candidate),
        "mean_keypoint_shift_px": float(shift.mean()),
        "max_keypoint_shift_px": float(shift.max()),
        "mean_keypoint_shift_ci_px": list(bootstrap.mean_interval(shift)),
        "mean_abs_diff": float(np.abs(candidate - reference).mean()),
        "num_crops": int(reference.shape[0]),
    }
    report.update(shift_breakdown(reference, candidate, shift))
    return report


def shift_breakdown(reference: np.ndarray, candidate: np.ndarray, shift: np.ndarray,
                    step: float = 1.0 / 256.0) -> dict[str, float]:
    """Where a keypoint shift comes from (reported beside the mean, which stays the measure).

    Args:
        reference, candidate: heatmaps [N, h, w, K].
        shift: keypoint shifts [N, K] in crop pixels.
        step: one output quantization step (TFLite's int8 LOGISTIC: 1/256).

    Returns:
        {"median_keypoint_shift_px"; "peak_moved_fraction" (maps whose argmax pixel differs)
        and "mean_shift_same_peak_px" (mean over the others: sub-pixel differences);
        "ambiguous_peak_fraction" (reference maps with a pixel outside the peak's 3x3 within
        one ``step`` of the peak: a rounding step can move the peak far) and
        "mean_shift_unambiguous_px" (mean over the others); "constant_reference_maps"
        (maps with a single value, whose correlation is undefined); "identical_pixel_fraction"}.
    """
    n, h, w, k = reference.shape
    ref = reference.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    cand = candidate.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    peak = ref.argmax(-1)
    moved = peak != cand.argmax(-1)
    py, px = np.divmod(peak, w)
    yy, xx = np.divmod(np.arange(h * w), w)
    outside = (np.abs(yy - py[..., None]) > 1) | (np.abs(xx - px[..., None]) > 1)
    rival = np.where(outside, ref, -np.inf).max(-1)
    ambiguous = ref.max(-1) - rival <= step * (1 + 1e-3)

    def mean(mask):
        return float(shift[mask].mean()) if mask.any() else 0.0

    return {
        "median_keypoint_shift_px": float(np.median(shift)),
        "peak_moved_fraction": float(moved.mean()),
        "mean_shift_same_peak_px": mean(~moved),
        "ambiguous_peak_fraction": float(ambiguous.mean()),
        "mean_shift_unambiguous_px": mean(~ambiguous),
        "constant_reference_maps": int(np.sum(ref.max(-1) == ref.min(-1))),
        "identical_pixel_fraction": float(np.mean(candidate == reference)),
    }


def keras_heatmaps(model: keras.Model, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Inference-mode heatmaps [N, h, w, K] of a Keras model on crops [N, H, W, 3]."""
    outs = [model(crops[i:i + batch_size], training=False).numpy()
            for i in range(0, len(crops), batch_size)]
    return np.concatenate(outs)


def ulp_sensitivity(model: keras.Model, crops: np.ndarray, reference: np.ndarray,
                    decode: str = "dark") -> dict | None:
    """How far a model's own heatmaps move when every BN variance moves up one float32 ulp.

    The converter folds BN into per-channel weight scales that it computes in its own float
    order; on some channels they differ from the Keras model's by 1-2 ulps, and float sums
    round differently from the file's integer accumulators. A fake-quant graph turns such
    differences into whole int8 steps where a value sits near a rounding tie. A trained model
    damps those steps; an untrained one can amplify them layer by layer. This measures that
    floor: no float simulation can agree with the file better than the model agrees with
    itself after a 1-ulp change. The model's variables are restored afterwards.

    Args:
        model: the Keras model (for an int8_qat file, the QAT model).
        crops: crops [N, H, W, 3].
        reference: the model's own heatmaps [N, h, w, K] of those crops.
        decode: the keypoint decoder.

    Returns:
        {"heatmap_correlation", "mean_keypoint_shift_px", "perturbed_variables"}, or None when
        the model has no BatchNormalization layer.
    """
    variances = [bn.moving_variance for bn in batch_norm_layers(model)]
    if not variances:
        return None
    saved = [v.numpy() for v in variances]
    try:
        for variable, value in zip(variances, saved, strict=True):
            variable.assign(np.nextafter(value, np.float32(np.inf)))
        moved = keras_heatmaps(model, crops)
    finally:
        for variable, value in zip(variances, saved, strict=True):
            variable.assign(value)
    report = compare_heatmaps(reference, moved, decode)
    return {"heatmap_correlation": report["heatmap_correlation"],
            "mean_keypoint_shift_px": report["mean_keypoint_shift_px"],
            "perturbed_variables": len(variances)}


def xla_sensitivity(model: keras.Model, crops: np.ndarray, reference: np.ndarray,
                    decode: str = "dark", batch_size: int = 32) -> dict:
    """How far a model's own heatmaps move when TensorFlow runs it through XLA.

    XLA compiles the same graph (same weights, same fake-quant ranges) into other kernels
    that sum and fuse in another float32 order. A fake-quant graph turns those last-bit
    differences into whole int8 steps wherever a value sits near a rounding tie, as the
    file's exact integer sums do. Measured on the demo model (64 crops): XLA against the
    default path 0.13 px, oneDNN off against on 0.02-0.10 px, the file 0.04-0.11 px. A file
    that differs from the Keras model no more than XLA does is as faithful as any float32
    execution of the simulation can show.

    Args:
        model: the Keras model (for an int8_qat file, the QAT model).
        crops: crops [N, H, W, 3].
        reference: the model's own heatmaps [N, h, w, K] of those crops (default path).
        decode: the keypoint decoder.

    Returns:
        {"heatmap_correlation", "mean_keypoint_shift_px", "identical_pixel_fraction"}.
    """
    # Traced on a copy: tfmot's wrappers leave the traced (symbolic) fake-quantized kernels
    # on the layers they wrap, which would break later eager use of ``model``.
    with quantize_scope():
        copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    compiled = tf.function(lambda x: copy(x, training=False), jit_compile=True)
    moved = np.concatenate([compiled(tf.constant(crops[i:i + batch_size])).numpy()
                            for i in range(0, len(crops), batch_size)])
    report = compare_heatmaps(reference, moved, decode)
    return {k: report[k] for k in ("heatmap_correlation", "mean_keypoint_shift_px",
                                   "identical_pixel_fraction")}


def _within_thresholds(report: dict) -> bool:
    return bool(report["heatmap_correlation"] >= MIN_HEATMAP_CORRELATION
                and report["mean_keypoint_shift_px"] <= MAX_MEAN_KEYPOINT_SHIFT_PX)


def model_fidelity(model: keras.Model, tflite_path: str, crops: np.ndarray,
                   num_threads: int | None = None, decode: str = "dark") -> dict:
    """Compares a Keras model with a .tflite file on the same crops [N, H, W, 3].

    Returns:
        ``compare_heatmaps``'s dict plus "passed" (correlation >= MIN_HEATMAP_CORRELATION and
        mean shift within ``shift_budget``: the model's own float noise, at least
        MAX_MEAN_KEYPOINT_SHIFT_PX), the thresholds, "ulp_sensitivity"
        (``ulp_sensitivity``'s dict or None), "xla_sensitivity" (``xla_sensitivity``'s dict),
        "limited_by_rounding" (the model fails the thresholds against itself after a
        1-ulp change or under XLA, so a failure against the file says nothing about the
        simulation) and "layer_divergence" (``divergence.layer_divergence`` on the first
        ``divergence.DEFAULT_NUM_DIVERGENCE_CROPS`` crops: where the file and the model part
        ways).

    Raises:
        ValueError: no crops, or the file's input size differs from the model's.
    """
    if len(crops) == 0:
        raise ValueError("the fidelity check needs at least one eval crop")
    size = tuple(int(d) for d in model.input_shape[1:3])
    predictor = TFLitePredictor(tflite_path, size, num_threads)
    ref = keras_heatmaps(model, crops)
    got = np.concatenate([predictor(crops[i:i + 32]) for i in range(0, len(crops), 32)])
    if got.shape != ref.shape:
        raise ValueError(f"{tflite_path} outputs heatmaps {list(got.shape[1:])}, the Keras "
                         f"model {model.name} outputs {list(ref.shape[1:])} (different "
                         "keypoint count or heatmap size)")
    report = compare_heatmaps(ref, got, decode)
    sensitivity = ulp_sensitivity(model, crops, ref, decode)
    report["ulp_sensitivity"] = sensitivity
    report["xla_sensitivity"] = xla_sensitivity(model, crops, ref, decode)
    report["limited_by_rounding"] = bool(
        (sensitivity and not _within_thresholds(sensitivity))
        or not _within_thresholds(report["xla_sensitivity"]))
    report["layer_divergence"] = divergence.layer_divergence(
        model, tflite_path, crops[:divergence.DEFAULT_NUM_DIVERGENCE_CROPS], num_threads)
    report["thresholds"] = {"min_heatmap_correlation": MIN_HEATMAP_CORRELATION,
                            "max_mean_keypoint_shift_px": shift_budget(report)}
    report["passed"] = bool(
        report["heatmap_correlation"] >= MIN_HEATMAP_CORRELATION
        and report["mean_keypoint_shift_px"] <= report["thresholds"]["max_mean_keypoint_shift_px"])
    return report


def shift_budget(report: dict) -> float:
    """The keypoint shift a file may show against its Keras model: the model's own float32
    noise (the larger of its shift under XLA's summation order and after a 1-ulp change of
    its BN variances), and never less than ``MAX_MEAN_KEYPOINT_SHIFT_PX``. A deep int8 model
    can turn last-bit float differences into whole steps (``divergence``), so a fixed
    budget below the model's own noise would judge the rounding, not the simulation."""
    floors = [s["mean_keypoint_shift_px"] for s in (report.get("xla_sensitivity"),
                                                    report.get("ulp_sensitivity")) if s]
    return max([MAX_MEAN_KEYPOINT_SHIFT_PX, *floors])


def _budget(report: dict) -> float:
    return report.get("thresholds", {}).get("max_mean_keypoint_shift_px",
                                            MAX_MEAN_KEYPOINT_SHIFT_PX)


def _interval(report: dict) -> str:
    ci = report.get("mean_keypoint_shift_ci_px")
    return f" (95% CI over crops {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


def format_fidelity(label: str, report: dict) -> str:
    status = "PASS" if report.get("passed") else "FAIL"
    text = (f"{label}: heatmap corr {report['heatmap_correlation']:.5f}, mean keypoint shift "
            f"{report['mean_keypoint_shift_px']:.3f} crop px{_interval(report)} (max "
            f"{report['max_keypoint_shift_px']:.2f}), mean |diff| {report['mean_abs_diff']:.5f} "
            f"on {report['num_crops']} crops: {status} (corr >= {MIN_HEATMAP_CORRELATION}, "
            f"shift <= {_budget(report):.3f} px: the model's own float noise, at least "
            f"{MAX_MEAN_KEYPOINT_SHIFT_PX} px)")
    if "median_keypoint_shift_px" in report:
        text += (f"\n  shift: median {report['median_keypoint_shift_px']:.3f} px; peak pixel "
                 f"moved in {report['peak_moved_fraction']:.1%} of maps (mean over the rest "
                 f"{report['mean_shift_same_peak_px']:.3f} px); ambiguous peaks "
                 f"{report['ambiguous_peak_fraction']:.1%} (mean over the rest "
                 f"{report['mean_shift_unambiguous_px']:.3f} px); identical pixels "
                 f"{report['identical_pixel_fraction']:.1%}")
        if report["constant_reference_maps"]:
            text += (f"; {report['constant_reference_maps']} constant reference maps "
                     "(correlation undefined there)")
    if report.get("ulp_sensitivity"):
        floor = report["ulp_sensitivity"]
        text += (f"\n  1-ulp sensitivity (the Keras model against itself, every BN variance "
                 f"one float32 ulp up): corr {floor['heatmap_correlation']:.5f}, shift "
                 f"{floor['mean_keypoint_shift_px']:.3f} px")
    if report.get("xla_sensitivity"):
        xla = report["xla_sensitivity"]
        text += (f"\n  XLA sensitivity (the Keras model against itself compiled by XLA, another "
                 f"float32 summation order): corr {xla['heatmap_correlation']:.5f}, shift "
                 f"{xla['mean_keypoint_shift_px']:.3f} px, identical pixels "
                 f"{xla['identical_pixel_fraction']:.1%}")
    if report.get("layer_divergence"):
        text += "\n  layer by layer: " + divergence.summarize_divergence(
            report["layer_divergence"])
    if report.get("limited_by_rounding"):
        text += ("\n  the model itself moves beyond the thresholds under a 1-ulp or a "
                 "summation-order change: against its file, pass or fail lies within its own "
                 "float32 rounding noise")
    return text


def check_qat_file(model: keras.Model, tflite_path: str, crops: np.ndarray,
                   num_threads: int | None = None) -> dict:
    """``model_fidelity`` of an int8_qat file against the Keras QAT model it came from, printed
    and written to ``NAME.fidelity.json`` beside the file; a failure is logged loudly (with
    whether the model's own rounding noise explains it).

    Args:
        crops: eval crops [N, H, W, 3] (``DEFAULT_NUM_FIDELITY_CROPS`` of them by custom).

    Returns:
        The fidelity report.
    """
    fid = model_fidelity(model, tflite_path, crops, num_threads)
    sidecar = os.path.splitext(tflite_path)[0] + ".fidelity.json"
    write_json_atomic(sidecar, fid)
    print(format_fidelity("Keras QAT model vs " + os.path.basename(tflite_path), fid),
          flush=True)
    if not fid["passed"]:
        logging.warning("%s differs from its Keras QAT model beyond the fidelity thresholds "
                        "(see %s)%s", tflite_path, sidecar,
                        "; the model fails them against itself after a 1-ulp change of its BN "
                        "variances or under XLA, so this measures the model's amplification "
                        "of rounding, not the simulation" if fid["limited_by_rounding"] else "")
    return fid
