"""MPII PCKh, computed as the MPII benchmark table of SimpleBaseline/HRNet/mmpose does.

A joint is correct when ``||pred - gt|| <= threshold * head_size`` (head_size = 0.6 x the
head-box diagonal). Per joint, PCKh is the fraction of its visible (annotated) instances that
are correct; a group (shoulder, elbow, ...) is the mean of its left and right joints' PCKh, the
head group is the head-top joint, and ``mean`` pools all visible joints except pelvis and
thorax (i.e. the per-joint PCKh weighted by each joint's visible count). ``mean@0.1`` is the
same mean at threshold 0.1 (HRNet's script reads row 11 of its 0.01-step threshold grid,
i.e. 0.11; this module uses 0.1 exactly). Values are fractions in [0, 1]; a group without any
visible joint is NaN.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from fptflite.data.coco import PersonInstance
from fptflite.data.mpii import check_head_boxes, head_sizes
from fptflite.evaluation import coco_eval
from fptflite.keypoints import MPII_NUM_KEYPOINTS, MPII_PCKH_EXCLUDED, MPII_PCKH_GROUPS
from fptflite.utils.io import write_json_atomic

PCKH_NAMES = (*MPII_PCKH_GROUPS, "mean", "mean@0.1")


def correct_joints(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray,
                   head_size: np.ndarray, threshold: float) -> np.ndarray:
    """[N, K] bool: visible joints within ``threshold * head_size`` of the ground truth."""
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    return (err <= threshold * np.asarray(head_size, np.float64)[:, None]) & visible


def _check_inputs(pred, gt, visible, head_size):
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    visible = np.asarray(visible).astype(bool)
    head_size = np.asarray(head_size, np.float64)
    n = gt.shape[0] if gt.ndim == 3 else -1
    if gt.shape != (n, MPII_NUM_KEYPOINTS, 2) or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must be [N, {MPII_NUM_KEYPOINTS}, 2], got {pred.shape} "
                         f"and {gt.shape}")
    if visible.shape != (n, MPII_NUM_KEYPOINTS) or head_size.shape != (n,):
        raise ValueError(f"visible must be [{n}, {MPII_NUM_KEYPOINTS}] and head_size [{n}], got"
                         f" {visible.shape} and {head_size.shape}")
    bad = np.flatnonzero(~(np.isfinite(head_size) & (head_size > 0)))
    if len(bad):
        raise ValueError(f"head_size must be finite and > 0; record(s) {bad[:10].tolist()} "
                         f"have {head_size[bad[:10]].tolist()} (missing head box?)")
    if not np.all(np.isfinite(pred[visible])) or not np.all(np.isfinite(gt[visible])):
        raise ValueError("pred and gt must be finite at visible joints")
    return pred, gt, visible, head_size


def _mean_over_visible(correct: np.ndarray, visible: np.ndarray) -> float:
    keep = np.ones(MPII_NUM_KEYPOINTS, bool)
    keep[list(MPII_PCKH_EXCLUDED)] = False
    count = visible[:, keep].sum()
    return float(correct[:, keep].sum() / count) if count else float("nan")


def pckh(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray,
         threshold: float = 0.5) -> dict[str, float]:
    """PCKh per joint group, the mean, and the mean at threshold 0.1.

    Args:
        pred: [N, 16, 2] predicted joints in image pixels.
        gt: [N, 16, 2] ground-truth joints in image pixels.
        visible: [N, 16] which ground-truth joints are annotated (only these are scored).
        head_size: [N] 0.6 x head-box diagonal, in pixels (``data.mpii.head_sizes``).
        threshold: fraction of the head size within which a joint is correct (inclusive).

    Returns:
        {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "mean", "mean@0.1"}
        as fractions in [0, 1] (NaN for a group without visible joints).
    """
    pred, gt, visible, head_size = _check_inputs(pred, gt, visible, head_size)
    correct = correct_joints(pred, gt, visible, head_size, threshold)
    count = visible.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(count > 0, correct.sum(0) / np.maximum(count, 1), np.nan)
    out = {g: float(np.mean(per_joint[list(idx)])) for g, idx in MPII_PCKH_GROUPS.items()}
    out["mean"] = _mean_over_visible(correct, visible)
    out["mean@0.1"] = _mean_over_visible(
        correct_joints(pred, gt, visible, head_size, 0.1), visible)
    return out


def format_pckh(stats: dict[str, float], title: str = "") -> str:
    """The PCKh table (percent), as papers print it."""
    head = " | ".join(f"{k:>8}" for k in PCKH_NAMES)
    vals = " | ".join(f"{100 * stats[k]:8.2f}" for k in PCKH_NAMES)
    return (f"{title}\n" if title else "") + f"| {head} |\n| {vals} |"


def instance_head_sizes(instances: Sequence[PersonInstance]) -> np.ndarray:
    """[N] head sizes of the instances' head boxes; raises ``DataError`` naming the records
    that have none."""
    check_head_boxes(instances)
    return head_sizes(np.stack([inst.head_box for inst in instances]))


def score_predictions(instances: Sequence[PersonInstance], coords: np.ndarray,
                      out_dir: str | None = None) -> dict[str, float]:
    """PCKh of predicted image coordinates [N, 16, 2]; writes ``pred.json`` (predicted
    joints, 0-based pixels) and ``metrics.json`` into ``out_dir`` if given."""
    sizes = instance_head_sizes(instances)
    gt = np.stack([i.keypoints for i in instances])
    stats = pckh(coords, gt[..., :2], gt[..., 2] > 0, sizes)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json_atomic(os.path.join(out_dir, "pred.json"),
                          [{"record": int(i.ann_id), "joints": np.round(c, 2).tolist()}
                           for i, c in zip(instances, coords, strict=True)], indent=None)
        write_json_atomic(os.path.join(out_dir, "metrics.json"), stats)
    return stats


def evaluate(predictor, instances: Sequence[PersonInstance], input_size: Sequence[int],
             out_dir: str | None = None, batch_size: int = 32, flip_test: bool = False,
             decode: str = "dark", progress: bool = True
             ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Predicts every instance's crop (streaming, as ``coco_eval``) and scores PCKh.

    Returns:
        (stats keyed by ``PCKH_NAMES``, predictions from ``coco_eval.predict_instances``).
    """
    instance_head_sizes(instances)  # fail before predicting
    pred = coco_eval.predict_instances(predictor, instances, input_size, batch_size, flip_test,
                                       decode, progress)
    return score_predictions(instances, pred["coords"], out_dir), pred
