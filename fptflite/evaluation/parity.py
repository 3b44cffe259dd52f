"""Float vs TFLite parity: AP delta, per-keypoint pixel error and heatmap correlation."""

from __future__ import annotations

import numpy as np

from fptflite.keypoints import COCO_KEYPOINT_NAMES


def heatmap_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Pearson correlation over (instance, keypoint) heatmaps [N, h, w, K]."""
    n, h, w, k = a.shape
    x = a.transpose(0, 3, 1, 2).reshape(n * k, h * w).astype(np.float64)
    y = b.transpose(0, 3, 1, 2).reshape(n * k, h * w).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    ok = den > 0
    return float(((x * y).sum(1)[ok] / den[ok]).mean()) if ok.any() else 0.0


def parity_report(reference: dict, candidate: dict, reference_stats: dict,
                  candidate_stats: dict, names=COCO_KEYPOINT_NAMES) -> dict:
    """Compares two ``predict_instances`` outputs made on the same crops.

    Returns:
        dict with AP of both, "ap_delta" (candidate - reference, AP points x100 in
        "ap_delta_points"), per-keypoint mean crop-pixel error between the two models'
        predictions, its mean, and the mean heatmap correlation.
    """
    err = np.linalg.norm(candidate["crop_coords"] - reference["crop_coords"], axis=-1)
    per_kp = err.mean(axis=0)
    out = {
        "reference_ap": reference_stats["AP"],
        "candidate_ap": candidate_stats["AP"],
        "ap_delta": candidate_stats["AP"] - reference_stats["AP"],
        "ap_delta_points": 100.0 * (candidate_stats["AP"] - reference_stats["AP"]),
        "mean_keypoint_error_px": float(err.mean()),
        "median_keypoint_error_px": float(np.median(err)),
        "per_keypoint_error_px": {n: float(v) for n, v in zip(names, per_kp, strict=True)},
        "num_instances": int(err.shape[0]),
    }
    if "heatmaps" in reference and "heatmaps" in candidate:
        out["heatmap_correlation"] = heatmap_correlation(reference["heatmaps"],
                                                         candidate["heatmaps"])
    return out


def evaluate_against_float(
    tflite_path: str,
    float_model,
    instances,
    ann_file: str,
    out_dir: str,
    num_threads: int | None = None,
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    float_result: tuple[dict, dict] | None = None,
    label: str | None = None,
) -> dict:
    """Evaluates a .tflite and (unless ``float_result`` is given) its float model on the same
    crops; writes both result sets, ``parity.json`` and ``parity.png`` into ``out_dir``.

    Returns:
        The parity report, plus "float_result" and "tflite_result" = (stats, predictions)
        for reuse (pictures, further comparisons).
    """
    import os

    from fptflite import visualization
    from fptflite.evaluation import coco_eval
    from fptflite.tflite.runner import TFLitePredictor
    from fptflite.utils.io import write_json_atomic

    input_size = tuple(int(d) for d in float_model.input_shape[1:3])
    predictor = TFLitePredictor(tflite_path, input_size, num_threads)
    if float_result is None:
        float_result = coco_eval.evaluate(
            coco_eval.keras_predictor(float_model), instances, ann_file, input_size,
            os.path.join(out_dir, "float"), batch_size, flip_test, decode, True, True)
    stats, pred = coco_eval.evaluate(predictor, instances, ann_file, input_size, out_dir,
                                     batch_size, flip_test, decode, True, True)
    report = parity_report(float_result[1], pred, float_result[0], stats)
    report["tflite"] = tflite_path
    report["stats"] = stats
    report["float_stats"] = float_result[0]
    write_json_atomic(os.path.join(out_dir, "parity.json"), report)
    visualization.parity_plot({label or os.path.basename(tflite_path): report},
                              os.path.join(out_dir, "parity.png"))
    report["float_result"] = float_result
    report["tflite_result"] = (stats, pred)
    return report


def format_parity(rows: dict[str, dict]) -> str:
    """A markdown table: one row per TFLite file against the float model."""
    lines = ["| model | AP | float AP | delta (points) | mean kp err (px) | heatmap corr |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {100 * r['candidate_ap']:.1f} | {100 * r['reference_ap']:.1f}"
                     f" | {r['ap_delta_points']:+.2f} | {r['mean_keypoint_error_px']:.2f} | "
                     f"{r.get('heatmap_correlation', float('nan')):.4f} |")
    return "\n".join(lines)
