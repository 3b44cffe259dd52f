"""Float vs TFLite parity: metric delta, per-keypoint pixel error and heatmap correlation.

The metric is the dataset's (``fptflite.evaluation.metrics``): COCO keypoint AP or MPII mean
PCKh@0.5; the report keeps the keys ``reference_score`` / ``candidate_score`` /
``score_delta_points`` for both and names the metric in ``metric``.

The float model and every compared file run on each batch of crops in one pass; the heatmap
correlations are accumulated batch by batch, so memory does not grow with the number of
boxes beyond the decoded keypoints, and the float model runs once however many files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tf_keras as keras

from fptflite import visualization
from fptflite.codec import HEATMAP_STRIDE
from fptflite.evaluation import coco_eval
from fptflite.evaluation.metrics import Metric, get_metric
from fptflite.tflite import benchmark
from fptflite.tflite.runner import TFLitePredictor
from fptflite.tflite.runtimes import RUNTIMES, RuntimeUnavailable, Session, open_session
from fptflite.utils.io import write_json_atomic

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
REFERENCE = "reference"


def _pair_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each (instance, keypoint) heatmap pair [B, h, w, K] -> [B * K]
    (NaN where either map is constant)."""
    n, h, w, k = a.shape
    x = a.transpose(0, 3, 1, 2).reshape(n * k, h * w).astype(np.float64)
    y = b.transpose(0, 3, 1, 2).reshape(n * k, h * w).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    y -= y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    ok = den > 0
    return np.where(ok, (x * y).sum(1) / np.where(ok, den, 1.0), np.nan)


def heatmap_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Pearson correlation over (instance, keypoint) heatmaps [N, h, w, K]."""
    r = _pair_correlations(a, b)
    return float(np.nanmean(r)) if np.isfinite(r).any() else 0.0


class StreamingCorrelation:
    """``heatmap_correlation`` accumulated batch by batch: the same mean, O(1) memory."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        """Adds the pairs of one batch of heatmaps a, b [B, h, w, K]."""
        r = _pair_correlations(a, b)
        ok = np.isfinite(r)
        self.total += float(r[ok].sum())
        self.count += int(ok.sum())

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


def parity_report(reference: dict, candidate: dict, reference_stats: dict,
                  candidate_stats: dict, metric: Metric | None = None,
                  correlation: float | None = None) -> dict:
    """Compares two ``predict_instances`` outputs made on the same crops.

    Args:
        reference, candidate: predictions with "crop_coords" [N, K, 2].
        reference_stats, candidate_stats: the metric's stats of each.
        metric: the metric (default COCO keypoint AP).
        correlation: mean heatmap correlation (from ``StreamingCorrelation``), if measured.

    Returns:
        dict with AP of both, "score_delta" (candidate - reference, AP points x100 in
        "score_delta_points"), per-keypoint mean crop-pixel error between the two models'
        predictions, its mean and median, and the mean heatmap correlation.
    """
    metric = metric or get_metric("coco")
    ref, cand = metric.value(reference_stats), metric.value(candidate_stats)
    err = np.linalg.norm(candidate["crop_coords"] - reference["crop_coords"], axis=-1)
    per_kp = err.mean(axis=0)
    out = {
        "metric": metric.name,
        "reference_score": ref,
        "candidate_score": cand,
        "score_delta": cand - ref,
        "score_delta_points": 100.0 * (cand - ref),
        "mean_keypoint_error_px": float(err.mean()),
        "median_keypoint_error_px": float(np.median(err)),
        "per_keypoint_error_px": {n: float(v) for n, v in zip(metric.keypoint_names, per_kp,
                                                              strict=True)},
        "num_instances": int(err.shape[0]),
    }
    if correlation is not None:
        out["heatmap_correlation"] = float(correlation)
    return out


def compare_predictors(
    reference: Predictor,
    candidates: dict[str, Predictor],
    instances,
    input_size,
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
) -> tuple[dict, dict[str, dict], dict[str, float]]:
    """Runs a reference and candidate predictors over the same crops in one streaming pass.

    Returns:
        (reference predictions, {name: candidate predictions}, {name: mean heatmap
        correlation with the reference}); predictions as from ``predict_instances``.
    """
    if REFERENCE in candidates:
        raise ValueError(f"a candidate may not be called {REFERENCE!r}")
    corr = {name: StreamingCorrelation() for name in candidates}

    def on_batch(indices, heatmaps):
        for name, c in corr.items():
            c.update(heatmaps[REFERENCE], heatmaps[name])

    preds = coco_eval.predict_many({REFERENCE: reference, **candidates}, instances, input_size,
                                   batch_size, flip_test, decode, progress, on_batch)
    ref = preds.pop(REFERENCE)
    return ref, preds, {name: c.result() for name, c in corr.items()}


def evaluate_files_against_float(
    files: dict[str, tuple[str, str]],
    float_model,
    instances,
    ann_file: str,
    float_dir: str,
    num_threads: int | None = None,
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    progress: bool = True,
    metric: Metric | None = None,
    runtime: str | Mapping[str, str] = "cpu",
    sessions: Mapping[str, Session] | None = None,
) -> tuple[tuple[dict, dict, str], dict[str, dict]]:
    """Evaluates .tflite files against their float model in one streaming pass: each batch
    of crops goes through the float model once and through every file (only decoded
    keypoints and running statistics are kept, so memory grows with the boxes' keypoints
    alone, and the float model's cost is paid once however many files are compared).

    Args:
        files: label -> (.tflite path, output directory for its results, ``parity.json``
            and ``parity.png``).
        float_model: the float Keras model the files came from.
        instances: the evaluation instances (``coco.load_instances``).
        ann_file: their annotation file.
        float_dir: where the float model's results go.
        metric: COCO keypoint AP (default) or MPII PCKh (``metrics.get_metric``).
        runtime: where the files run (``fptflite.tflite.runtimes.RUNTIMES``), for all or
            by label.
        sessions: label -> an open runtime session of its file (not opened again).

    Returns:
        (float_result, reports): float_result = (stats, predictions, results file);
        reports: label -> the parity report with the COCO result files of both models
        ("results_file", "float_results_file", for ``bootstrap.load_match_tables``),
        "stats", "float_stats" and "tflite_result" = (stats, predictions, results file).
    """
    metric = metric or get_metric("coco")
    if not files:
        raise ValueError("no .tflite file to evaluate against the float model")
    input_size = tuple(int(d) for d in float_model.input_shape[1:3])
    where = {label: runtime if isinstance(runtime, str) else runtime[label] for label in files}
    sessions = sessions or {}
    predictors = {label: TFLitePredictor(path, input_size, num_threads, runtime=where[label],
                                         session=sessions.get(label))
                  for label, (path, _) in files.items()}
    ref_pred, cands, corr = compare_predictors(
        coco_eval.keras_predictor(float_model), predictors, instances, input_size,
        batch_size, flip_test, decode, progress)
    float_result = (metric.score(instances, ref_pred, ann_file, float_dir),
                    ref_pred, os.path.join(float_dir, coco_eval.RESULTS_FILE))
    reports = {}
    for label, (path, out_dir) in files.items():
        pred = cands.pop(label)
        stats = metric.score(instances, pred, ann_file, out_dir)
        report = parity_report(ref_pred, pred, float_result[0], stats, metric, corr[label])
        report["tflite"] = path
        report["runtime"] = where[label]
        report["results_file"] = os.path.join(out_dir, coco_eval.RESULTS_FILE)
        report["float_results_file"] = float_result[2]
        report["stats"] = stats
        report["float_stats"] = float_result[0]
        write_json_atomic(os.path.join(out_dir, "parity.json"), report)
        visualization.parity_plot({label: report}, os.path.join(out_dir, "parity.png"))
        report["tflite_result"] = (stats, pred, report["results_file"])
        reports[label] = report
    return float_result, reports


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
    progress: bool = True,
    metric: Metric | None = None,
    runtime: str = "cpu",
) -> dict:
    """``evaluate_files_against_float`` for one file: its results, ``parity.json`` and
    ``parity.png`` go into ``out_dir``, the float model's results into ``out_dir/float``.

    Returns:
        The file's parity report (see ``evaluate_files_against_float``).
    """
    label = os.path.basename(tflite_path)
    _, reports = evaluate_files_against_float(
        {label: (tflite_path, out_dir)}, float_model, instances, ann_file,
        os.path.join(out_dir, "float"), num_threads, batch_size, flip_test, decode, progress,
        metric, runtime)
    return reports[label]


def format_parity(rows: dict[str, dict]) -> str:
    """A markdown table: one row per TFLite file against the float model."""
    name = next(iter(rows.values()), {}).get("metric", "AP")
    lines = [f"| model | {name} | float {name} | delta (points) | mean kp err (px) "
             "| heatmap corr |", "|---|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {100 * r['candidate_score']:.1f} | "
                     f"{100 * r['reference_score']:.1f} | {r['score_delta_points']:+.2f} | "
                     f"{r['mean_keypoint_error_px']:.2f} | "
                     f"{r.get('heatmap_correlation', float('nan')):.4f} |")
    return "\n".join(lines)


def compare_mixed(paths: dict[str, str], float_model: keras.Model, instances, ann_file: str,
                  out_dir: str, num_threads: int | None = None, flip_test: bool = False,
                  decode: str = "dark", latency_runs: int = 30) -> dict[str, dict]:
    """AP (against the float model, same crops), size and single-image latency of the
    full-int8 and the mixed file.

    Returns:
        label -> {"path", "ap", "float_ap", "score_delta_points", "size_mb", "latency_ms",
        "heatmap_correlation"}.
    """
    _, reports = evaluate_files_against_float(
        {label: (path, os.path.join(out_dir, "eval", label)) for label, path in paths.items()},
        float_model, instances, ann_file, os.path.join(out_dir, "eval", "float"), num_threads,
        32, flip_test, decode)
    out = {}
    for label, path in paths.items():
        rep = reports[label]
        lat = benchmark.summarize_ms(benchmark.time_tflite(path, num_threads or 1,
                                                           runs=latency_runs))
        out[label] = {"path": path, "ap": rep["candidate_score"],
                      "float_ap": rep["reference_score"],
                      "score_delta_points": rep["score_delta_points"],
                      "heatmap_correlation": rep.get("heatmap_correlation"),
                      "size_mb": os.path.getsize(path) / 1e6, "latency_ms": lat["median_ms"]}
    return out


def format_mixed(rows: dict[str, dict]) -> str:
    lines = ["| file | AP | float AP | delta (points) | heatmap corr | size (MB) | latency (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {100 * r['ap']:.1f} | {100 * r['float_ap']:.1f} | "
                     f"{r['score_delta_points']:+.2f} | {r['heatmap_correlation']:.4f} | "
                     f"{r['size_mb']:.2f} | {r['latency_ms']:.2f} |")
    return "\n".join(lines)


def keypoint_shift(reference: dict, candidate: dict, stride: int = HEATMAP_STRIDE) -> dict:
    """How far one run's keypoints move from another's on the same crops, in heatmap pixels.

    Args:
        reference, candidate: predictions with "crop_coords" [N, K, 2] (crop pixels).

    Returns:
        {"mean_px", "p95_px", "max_px", "share_above_1px"} over all N x K keypoints.
    """
    d = np.linalg.norm(candidate["crop_coords"] - reference["crop_coords"], axis=-1) / stride
    return {"mean_px": float(d.mean()), "p95_px": float(np.percentile(d, 95)),
            "max_px": float(d.max()), "share_above_1px": float((d > 1).mean())}


def evaluate_on_runtimes(
    path: str,
    float_model: keras.Model,
    instances,
    ann_file: str,
    out_dir: str,
    reference_pred: dict,
    names: Sequence[str] = RUNTIMES[1:],
    num_threads: int | None = None,
    batch_size: int = 32,
    flip_test: bool = False,
    decode: str = "dark",
    metric: Metric | None = None,
) -> dict[str, dict]:
    """One .tflite on several runtimes against the float model, in one pass over the crops.

    Args:
        reference_pred: the file's predictions on the default runtime ("cpu"), which every
            runtime's keypoints are compared with (``keypoint_shift``).
        names: the runtimes (default: all but "cpu", which the caller already evaluated).

    Returns:
        runtime -> its parity report plus "ran": True and "shift_vs_cpu", or {"ran": False,
        "reason": why it could not run here}.
    """
    rows, files, sessions = {}, {}, {}
    for name in names:
        try:
            sessions[name] = open_session(name, path, num_threads)
        except RuntimeUnavailable as e:
            rows[name] = {"runtime": name, "ran": False, "reason": str(e)}
            continue
        files[name] = (path, os.path.join(out_dir, name))
    if not files:
        return rows
    _, reports = evaluate_files_against_float(
        files, float_model, instances, ann_file, os.path.join(out_dir, "float"), num_threads,
        batch_size, flip_test, decode, metric=metric, runtime={n: n for n in files},
        sessions=sessions)
    for name, rep in reports.items():
        pred = rep.pop("tflite_result")[1]
        rows[name] = {**{k: v for k, v in rep.items() if k not in ("stats", "float_stats")},
                      "ran": True, "shift_vs_cpu": keypoint_shift(reference_pred, pred)}
    return {name: rows[name] for name in names}


def format_runtimes(rows: dict[str, dict]) -> str:
    """A markdown table: runtime x metric, delta against the float model, keypoint shift
    against the CPU runtime (heatmap px)."""
    lines = ["| runtime | metric | float | delta (points) | shift vs cpu: mean / p95 / max px "
             "| > 1 px |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        if not r.get("ran", True):
            lines.append(f"| {name} | not run: {r['reason']} | | | | |")
            continue
        s = r.get("shift_vs_cpu")
        shift = (f"{s['mean_px']:.3f} / {s['p95_px']:.3f} / {s['max_px']:.2f} | "
                 f"{100 * s['share_above_1px']:.2f}%") if s else "(reference) | "
        lines.append(f"| {name} | {r.get('metric', 'AP')} {100 * r['candidate_score']:.2f} | "
                     f"{100 * r['reference_score']:.2f} | {r['score_delta_points']:+.2f} | "
                     f"{shift} |")
    return "\n".join(lines)
