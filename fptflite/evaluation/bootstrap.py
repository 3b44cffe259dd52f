"""Is an AP difference between two models real? A paired bootstrap over the images.

Two result sets of the same images (QAT vs PTQ file, int8 vs float) differ in AP by a few
tenths of a point; whether that is a property of the models or of which 150 images the demo
happened to hold is a statistical question. The paired bootstrap answers it the usual way
(Efron & Tibshirani 1993; Koehn 2004 for paired system comparisons): resample the images
with replacement, recompute both APs on each resample, and read the confidence interval of
the difference. If it contains 0, the two models are within noise on this set.

COCO AP is not a mean over images, so each resample re-runs COCO's accumulation: every
detection keeps its OKS match from ``COCOeval.evaluate`` (which does not depend on the other
images), and a resample that draws image i w_i times weights its detections and ground
truths by w_i. The accumulation below is pycocotools' ``COCOeval.accumulate`` for one
category, area "all" and the last maxDets, vectorised; with all weights 1 it reproduces
pycocotools' AP (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Mapping

import numpy as np
from pycocotools.cocoeval import COCOeval

from fptflite.data.coco import load_coco, read_json
from fptflite.evaluation.student_t import DEFAULT_CONFIDENCE

DEFAULT_NUM_RESAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class MatchTable:
    """Per-detection OKS matches of one result set, in COCO's accumulation order.

    Attributes:
        image_ids: [I] COCO image ids, in ``COCOeval.params.imgIds`` order.
        det_image: [D] index into ``image_ids`` of each detection, the detections sorted by
            descending score (stable, as pycocotools).
        true_pos: [T, D] bool, matched and not ignored at each OKS threshold.
        false_pos: [T, D] bool, unmatched and not ignored.
        num_gt: [I] ground truths per image that count (not ignored).
        rec_thrs: [R] recall thresholds of the interpolated precision (COCO: 101).
    """

    image_ids: np.ndarray
    det_image: np.ndarray
    true_pos: np.ndarray
    false_pos: np.ndarray
    num_gt: np.ndarray
    rec_thrs: np.ndarray


def match_table(coco_gt, results: list[dict]) -> MatchTable:
    """Runs ``COCOeval.evaluate`` (keypoints) on ``results`` and keeps the matches AP needs.

    Args:
        coco_gt: a pycocotools COCO object of the annotations.
        results: COCO keypoint results of one model (at least one).

    Raises:
        ValueError: no results, or annotations with more than one category.
    """
    if not results:
        raise ValueError("no results to match: AP of an empty result set has no bootstrap")
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
    p = ev.params
    if len(p.catIds) != 1:
        raise ValueError(f"bootstrap AP is for one category, the annotations have {p.catIds}")
    num_images, max_det = len(p.imgIds), p.maxDets[-1]
    # evalImgs is ordered category x area range x image; area range 0 is "all".
    per_image = ev.evalImgs[:num_images]
    num_t = len(p.iouThrs)
    scores, det_image, matched, ignored = [], [], [], []
    num_gt = np.zeros(num_images, np.int64)
    for i, e in enumerate(per_image):
        if e is None:
            continue
        num_gt[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        s = np.asarray(e["dtScores"][:max_det], np.float64)
        scores.append(s)
        det_image.append(np.full(len(s), i, np.int64))
        matched.append(np.asarray(e["dtMatches"][:, :max_det]).reshape(num_t, -1) != 0)
        ignored.append(np.asarray(e["dtIgnore"][:, :max_det], bool).reshape(num_t, -1))
    # Non-empty results put every detection in the "all" area range of its image, so
    # ``scores`` has at least one entry.
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    m = np.concatenate(matched, axis=1)[:, order]
    ig = np.concatenate(ignored, axis=1)[:, order]
    return MatchTable(
        image_ids=np.asarray(p.imgIds),
        det_image=np.concatenate(det_image)[order],
        true_pos=m & ~ig,
        false_pos=~m & ~ig,
        num_gt=num_gt,
        rec_thrs=np.asarray(p.recThrs, np.float64),
    )


def load_match_tables(ann_file: str, result_files: Mapping[str, str]) -> dict[str, MatchTable]:
    """Match tables of several COCO result files (as written by ``coco_eval.write_results``)
    against one annotation file, keyed like ``result_files``."""
    coco_gt = load_coco(ann_file)
    tables = {}
    for name, path in result_files.items():
        results = read_json(path, "COCO results", list)
        if not results:
            raise ValueError(f"COCO results file {path} holds no results")
        tables[name] = match_table(coco_gt, results)
    return tables


def average_precision(table: MatchTable, image_weights: np.ndarray | None = None) -> float:
    """COCO AP (mean interpolated precision over OKS and recall thresholds) of a table,
    each image counted ``image_weights[i]`` times (default once), in [0, 1].

    Raises:
        ValueError: no ground truth counts under these weights.
    """
    w = np.ones(len(table.image_ids)) if image_weights is None else np.asarray(image_weights,
                                                                                np.float64)
    num_pos = float(np.dot(w, table.num_gt))
    if num_pos <= 0:
        raise ValueError("no ground truth under these image weights: AP is undefined")
    w_det = w[table.det_image]
    tp = np.cumsum(table.true_pos * w_det, axis=1)
    fp = np.cumsum(table.false_pos * w_det, axis=1)
    num_det = tp.shape[1]
    if num_det == 0:
        return 0.0
    recall = tp / num_pos
    precision = tp / (fp + tp + np.spacing(1))
    # Precision made monotone from the right (pycocotools' backward max loop).
    precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    ap = np.zeros((tp.shape[0], len(table.rec_thrs)))
    for t in range(tp.shape[0]):
        idx = np.searchsorted(recall[t], table.rec_thrs, side="left")
        ok = idx < num_det
        ap[t, ok] = precision[t, idx[ok]]
    return float(ap.mean())


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap ``samples`` (percentile method)."""
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def paired_ap_difference(a: MatchTable, b: MatchTable,
                         num_resamples: int = DEFAULT_NUM_RESAMPLES,
                         confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> dict:
    """AP(a) - AP(b) in AP points with a paired-bootstrap confidence interval.

    Both tables must come from the same annotations (same images). Each resample draws the
    images with replacement once and scores both models on it.

    Returns:
        dict with "delta_points" (on all images), "ci_low_points", "ci_high_points" (the
        percentile interval at ``confidence``), "within_noise" (the interval contains 0),
        "num_images", "num_resamples" and "confidence".

    Raises:
        ValueError: the tables cover different images.
    """
    if not np.array_equal(a.image_ids, b.image_ids):
        raise ValueError("the two result sets were matched against different images")
    n = len(a.image_ids)
    rng = np.random.default_rng(seed)
    deltas = np.empty(num_resamples)
    for r in range(num_resamples):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        while np.dot(w, a.num_gt) <= 0:  # a resample without ground truth: draw again
            w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        deltas[r] = average_precision(a, w) - average_precision(b, w)
    low, high = percentile_interval(100.0 * deltas, confidence)
    return {
        "delta_points": 100.0 * (average_precision(a) - average_precision(b)),
        "ci_low_points": low,
        "ci_high_points": high,
        "within_noise": bool(low <= 0.0 <= high),
        "num_images": int(n),
        "num_resamples": int(num_resamples),
        "confidence": float(confidence),
    }


def mean_interval(values: np.ndarray, num_resamples: int = DEFAULT_NUM_RESAMPLES,
                  confidence: float = DEFAULT_CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` [N, ...], resampling along the
    first axis (the independent units, e.g. crops; the rest, e.g. keypoints, stay together).
    """
    per_unit = np.asarray(values, np.float64).reshape(len(values), -1).mean(axis=1)
    n = len(per_unit)
    if n == 0:
        raise ValueError("no values to bootstrap")
    idx = np.random.default_rng(seed).integers(0, n, (num_resamples, n))
    return percentile_interval(per_unit[idx].mean(axis=1), confidence)


def format_difference(name_a: str, name_b: str, d: dict) -> str:
    """One line: '{a} - {b}: +0.12 AP points, 95% CI [-0.20, +0.41] over 150 images ...'."""
    verdict = ("within noise (the interval contains 0)" if d["within_noise"]
               else f"{name_a if d['delta_points'] > 0 else name_b} is better beyond noise")
    return (f"{name_a} - {name_b}: {d['delta_points']:+.2f} AP points, "
            f"{100 * d['confidence']:.0f}% CI [{d['ci_low_points']:+.2f}, "
            f"{d['ci_high_points']:+.2f}] (paired bootstrap over {d['num_images']} images, "
            f"{d['num_resamples']} resamples): {verdict}")
