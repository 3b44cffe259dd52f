"""SimpleBaseline/HRNet post-processing: keypoint rescoring and OKS-NMS (numpy only)."""

from __future__ import annotations

import numpy as np

from fptflite.keypoints import COCO_OKS_SIGMAS

KEYPOINT_SCORE_THRESHOLD = 0.2
OKS_NMS_THRESHOLD = 0.9


def rescore(keypoint_scores: np.ndarray, box_scores: np.ndarray,
            threshold: float = KEYPOINT_SCORE_THRESHOLD) -> np.ndarray:
    """Instance score = box score x mean of the keypoint scores above ``threshold``.

    Args:
        keypoint_scores: [N, K]; box_scores: [N].

    Returns:
        [N] scores (0 where no keypoint passes the threshold).
    """
    s = np.asarray(keypoint_scores, np.float64)
    mask = s > threshold
    n = mask.sum(axis=1)
    mean = np.where(n > 0, (s * mask).sum(axis=1) / np.maximum(n, 1), 0.0)
    return mean * np.asarray(box_scores, np.float64)


def oks(ref: np.ndarray, others: np.ndarray, ref_area: float, other_areas: np.ndarray,
        sigmas: np.ndarray = COCO_OKS_SIGMAS) -> np.ndarray:
    """OKS of one pose [K, 2] against poses [M, K, 2] with the mean of both areas (HRNet)."""
    var = (2 * sigmas) ** 2
    d2 = ((others - ref[None]) ** 2).sum(axis=-1)
    e = d2 / var[None] / ((ref_area + other_areas)[:, None] / 2 + np.spacing(1)) / 2
    return np.exp(-e).mean(axis=1)


def oks_nms(coords: np.ndarray, scores: np.ndarray, areas: np.ndarray,
            threshold: float = OKS_NMS_THRESHOLD) -> list[int]:
    """Greedy OKS non-maximum suppression within one image.

    Args:
        coords: [M, K, 2] poses; scores: [M]; areas: [M].

    Returns:
        Indices kept, best first.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        o = oks(coords[i], coords[order[1:]], areas[i], areas[order[1:]])
        order = order[1:][o <= threshold]
    return keep
