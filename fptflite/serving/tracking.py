"""MoveNet-style crop tracking: the next frame's square crop from this frame's keypoints.

The rule (as the Android sample's MoveNet.kt applies it): when a shoulder and a hip score
above 0.2, centre the square on the mid-hip point, with half-size = max(torso extent x 1.9,
body extent x 1.2), where the extents are the largest |dx| and |dy| from the centre over the
four torso keypoints and over all keypoints above 0.2; the half-size is capped at the largest
distance from the centre to a frame edge, and a square larger than the frame falls back to
the whole frame padded to a square (as does a lost torso).
"""

from __future__ import annotations

import numpy as np

from fptflite.keypoints import COCO_KEYPOINT_NAMES
from fptflite.serving.app_pipeline import SquareRegion, whole_frame_region

MIN_CROP_KEYPOINT_SCORE = 0.2
TORSO_EXPANSION_RATIO = 1.9
BODY_EXPANSION_RATIO = 1.2
_IDX = {n: COCO_KEYPOINT_NAMES.index(n) for n in (
    "left_shoulder", "right_shoulder", "left_hip", "right_hip")}
TORSO = tuple(_IDX.values())


def torso_visible(scores: np.ndarray, threshold: float = MIN_CROP_KEYPOINT_SCORE) -> bool:
    """A hip and a shoulder score above ``threshold``."""
    s = np.asarray(scores)
    hips = s[_IDX["left_hip"]] > threshold or s[_IDX["right_hip"]] > threshold
    shoulders = s[_IDX["left_shoulder"]] > threshold or s[_IDX["right_shoulder"]] > threshold
    return bool(hips and shoulders)


def movenet_crop_region(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
                        threshold: float = MIN_CROP_KEYPOINT_SCORE) -> SquareRegion:
    """Next crop region from keypoints [K, 2] (x, y frame pixels) and scores [K]."""
    if not torso_visible(scores, threshold):
        return whole_frame_region(width, height)
    kps = np.asarray(keypoints, np.float64)
    center = (kps[_IDX["left_hip"]] + kps[_IDX["right_hip"]]) / 2
    torso = np.abs(kps[list(TORSO)] - center).max(axis=0)
    confident = np.asarray(scores) >= threshold
    body = np.abs(kps[confident] - center).max(axis=0) if confident.any() else np.zeros(2)
    half = max(torso.max() * TORSO_EXPANSION_RATIO, body.max() * BODY_EXPANSION_RATIO)
    half = min(half, max(center[0], width - center[0], center[1], height - center[1]))
    if half > max(width, height) / 2 or half <= 0:
        return whole_frame_region(width, height)
    return SquareRegion(center[0] - half, center[1] - half, 2 * half)
