"""Box -> crop geometry shared by training, evaluation and the TFLite harness (numpy).

A person box becomes a crop region: (center, size) in image pixels, where size has the
input's aspect ratio and 1.25 padding. ``crop_matrix`` maps image pixels to crop pixels with
pixel centres at integer coordinates (as cv2.warpAffine and TF's ImageProjectiveTransform
sample); its inverse maps predictions back.
"""

from __future__ import annotations

import math

import numpy as np

BOX_PADDING = 1.25


def box_to_center_size(box_xywh, aspect_ratio: float, padding: float = BOX_PADDING
                       ) -> tuple[np.ndarray, np.ndarray]:
    """COCO box [x, y, w, h] -> center [2] and crop size [2] = (width, height) in pixels.

    The box is grown to ``aspect_ratio`` (= input width / height), then by ``padding``.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    center = np.array([x + w * 0.5, y + h * 0.5])
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h]) * padding


def crop_matrix(center, size, output_size, rotation_deg: float = 0.0,
                flip: bool = False) -> np.ndarray:
    """3x3 affine matrix from image pixels to crop pixels.

    Args:
        center: [2] crop centre in the image.
        size: [2] crop (width, height) in image pixels.
        output_size: (H, W) of the crop.
        rotation_deg: counter-clockwise rotation of the crop content, degrees.
        flip: mirror the crop horizontally.
    """
    out_h, out_w = output_size
    s = out_w / float(size[0])
    a = math.radians(rotation_deg)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    m = np.array([[cos, sin, 0.0], [-sin, cos, 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = -m[:2, :2] @ np.asarray(center, np.float64) + [(out_w - 1) / 2, (out_h - 1) / 2]
    if flip:
        m = np.array([[-1.0, 0.0, out_w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
    return m


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Applies a 3x3 affine matrix to points [..., 2]."""
    p = np.asarray(points, np.float64)
    return p @ matrix[:2, :2].T + matrix[:2, 2]


def crop_to_image(points: np.ndarray, center, size, output_size) -> np.ndarray:
    """Maps crop-pixel points [..., 2] of an unrotated, unflipped crop back to the image."""
    return apply_affine(np.linalg.inv(crop_matrix(center, size, output_size)), points)
