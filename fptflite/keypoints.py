"""The COCO person keypoint definition: the one place that names the 17 keypoints.

Everything that needs keypoint names, left/right flip pairs, the skeleton or the OKS sigmas
imports them from here.
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


def flip_permutation(num_keypoints: int = NUM_KEYPOINTS,
                     flip_pairs: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS) -> np.ndarray:
    """Index permutation that maps keypoint k to its mirror partner.

    Returns:
        int array [K]: ``perm[k]`` is the index whose data lands on k after a flip.
    """
    perm = np.arange(num_keypoints)
    for a, b in flip_pairs:
        if a >= num_keypoints or b >= num_keypoints:
            raise ValueError(f"flip pair ({a}, {b}) out of range for {num_keypoints} keypoints")
        perm[a], perm[b] = b, a
    return perm
