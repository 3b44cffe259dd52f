"""Keypoint definitions: the one place that names COCO's 17 keypoints and MPII's 16 joints.

Everything that needs keypoint names, left/right flip pairs, the skeleton, the OKS sigmas or
the MPII PCKh joint groups imports them from here.
"""

from __future__ import annotations

import numpy as np

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINT_NAMES)

# Pairs of (left, right) keypoint indices swapped by a horizontal flip.
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (3, 4),
    (5, 6),
    (7, 8),
    (9, 10),
    (11, 12),
    (13, 14),
    (15, 16),
)

# Skeleton edges as 1-based keypoint ids, exactly as in the COCO annotation files.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

# Per-keypoint OKS sigmas, identical to pycocotools' COCOeval defaults.
COCO_OKS_SIGMAS: np.ndarray = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87,
     0.87, 0.89, 0.89],
    dtype=np.float64,
) / 10.0

# Head and arms; HRNet's half-body augmentation crops to these or to the rest (hips, legs).
COCO_UPPER_BODY: tuple[int, ...] = tuple(
    i for i, n in enumerate(COCO_KEYPOINT_NAMES) if not n.endswith(("hip", "knee", "ankle")))

PERSON_CATEGORY: dict = {
    "id": 1,
    "name": "person",
    "supercategory": "person",
    "keypoints": list(COCO_KEYPOINT_NAMES),
    "skeleton": [list(e) for e in COCO_SKELETON],
}


# MPII Human Pose: 16 joints in the order of the official annotation (and of the JSON files
# the common pose codebases use).
MPII_KEYPOINT_NAMES: tuple[str, ...] = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)
MPII_NUM_KEYPOINTS = len(MPII_KEYPOINT_NAMES)


def _mpii(name: str) -> int:
    return MPII_KEYPOINT_NAMES.index(name)


# (left, right) pairs swapped by a horizontal flip.
MPII_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (_mpii(f"left_{p}"), _mpii(f"right_{p}"))
    for p in ("ankle", "knee", "hip", "wrist", "elbow", "shoulder"))

# Skeleton edges as 0-based joint indices.
MPII_SKELETON: tuple[tuple[int, int], ...] = tuple((_mpii(a), _mpii(b)) for a, b in (
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("left_hip", "pelvis"),
    ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
    ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"),
    ("right_shoulder", "thorax"), ("left_wrist", "left_elbow"),
    ("left_elbow", "left_shoulder"), ("left_shoulder", "thorax")))

# The MPII benchmark's PCKh table: joint groups (the head is the head-top joint, as in the
# benchmark table of SimpleBaseline/HRNet/mmpose), and the joints its mean leaves out.
MPII_PCKH_GROUPS: dict[str, tuple[int, ...]] = {
    "head": (_mpii("head_top"),),
    **{g: (_mpii(f"left_{g}"), _mpii(f"right_{g}"))
       for g in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")},
}
MPII_PCKH_EXCLUDED: tuple[int, ...] = (_mpii("pelvis"), _mpii("thorax"))

MPII_UPPER_BODY: tuple[int, ...] = tuple(
    i for i, n in enumerate(MPII_KEYPOINT_NAMES)
    if not n.endswith(("hip", "knee", "ankle", "pelvis")))

# Flip pairs and upper-body sets by number of keypoints: 17 is COCO, 16 is MPII.
_FLIP_PAIRS_BY_K = {NUM_KEYPOINTS: COCO_FLIP_PAIRS, MPII_NUM_KEYPOINTS: MPII_FLIP_PAIRS}
_UPPER_BODY_BY_K = {NUM_KEYPOINTS: COCO_UPPER_BODY, MPII_NUM_KEYPOINTS: MPII_UPPER_BODY}


def flip_pairs_for(num_keypoints: int) -> tuple[tuple[int, int], ...]:
    """Flip pairs of the keypoint set with ``num_keypoints`` keypoints (17 COCO, 16 MPII)."""
    if num_keypoints not in _FLIP_PAIRS_BY_K:
        raise ValueError(f"no keypoint set with {num_keypoints} keypoints: 17 (COCO) or "
                         "16 (MPII)")
    return _FLIP_PAIRS_BY_K[num_keypoints]


def upper_body_for(num_keypoints: int) -> tuple[int, ...]:
    """Head-and-arms keypoint indices (half-body augmentation) of the 17 or 16 keypoint set."""
    flip_pairs_for(num_keypoints)  # validates
    return _UPPER_BODY_BY_K[num_keypoints]


def flip_permutation(num_keypoints: int = NUM_KEYPOINTS,
                     flip_pairs: tuple[tuple[int, int], ...] | None = None) -> np.ndarray:
    """Index permutation that maps keypoint k to its mirror partner.

    Args:
        num_keypoints: K.
        flip_pairs: (left, right) pairs; None picks the set's by K (17 COCO, 16 MPII).

    Returns:
        int array [K]: ``perm[k]`` is the index whose data lands on k after a flip.
    """
    if flip_pairs is None:
        flip_pairs = flip_pairs_for(num_keypoints)
    perm = np.arange(num_keypoints)
    for a, b in flip_pairs:
        if a >= num_keypoints or b >= num_keypoints:
            raise ValueError(f"flip pair ({a}, {b}) out of range for {num_keypoints} keypoints")
        perm[a], perm[b] = b, a
    return perm
