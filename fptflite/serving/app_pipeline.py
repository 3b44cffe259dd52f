"""A Python replica of the Android pose sample's single-pose pipeline (ml/MoveNet.kt).

Facts read from the sample (tensorflow/examples, lite/examples/pose_estimation/android):

* the crop region is a square; the first one (and the fallback) is the whole frame padded to
  a square around its centre; later ones come from the previous frame's keypoints
  (``fptflite.serving.tracking.movenet_crop_region``);
* the region is drawn into a new bitmap of ``int(width) x int(height)`` pixels (transparent,
  i.e. black RGB where the region leaves the frame), centre-cropped/padded to a square and
  resized bilinearly to S x S as uint8 RGB;
* output [1, 1, K, 3] is read as y = out[0] * crop height, x = out[1] * crop width, then
  shifted by the region's top-left corner; the person score is the mean of the K scores.

Here the region corner is snapped to whole pixels (what drawing a bitmap at that offset does),
and the parsed coordinates are edge-based (0 = left edge of the frame), like the app's; add
-0.5 to compare with pixel-centre coordinates (``fptflite.codec``'s convention).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class SquareRegion:
    """A square crop region in frame pixels: top-left corner and side (may leave the frame)."""

    left: float
    top: float
    size: float

    @property
    def center(self) -> np.ndarray:
        return np.array([self.left + self.size / 2, self.top + self.size / 2])


def whole_frame_region(width: int, height: int) -> SquareRegion:
    """The frame padded to a square around its centre (the app's first and fallback crop)."""
    side = float(max(width, height))
    return SquareRegion((width - side) / 2, (height - side) / 2, side)


def app_input(frame_rgb: np.ndarray, region: SquareRegion, input_size: int
              ) -> tuple[np.ndarray, SquareRegion]:
    """The uint8 [S, S, 3] tensor the app feeds for ``region`` of a frame [H, W, 3].

    Returns:
        the input image and the pixel-snapped region it covers (for parsing).
    """
    h, w = frame_rgb.shape[:2]
    left, top, side = int(round(region.left)), int(round(region.top)), int(region.size)
    if side < 1:
        raise ValueError(f"crop region {region} is empty")
    crop = np.zeros((side, side, 3), np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        crop[y0 - top:y1 - top, x0 - left:x1 - left] = frame_rgb[y0:y1, x0:x1]
    image = cv2.resize(crop, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return image, SquareRegion(float(left), float(top), float(side))


def parse_output(output: np.ndarray, region: SquareRegion) -> tuple[np.ndarray, np.ndarray,
                                                                    float]:
    """MoveNet.kt's parsing of [1, 1, K, 3] for a crop covering ``region``.

    Returns:
        keypoints [K, 2] (x, y) in frame pixels (edge-based, as the app), scores [K], and
        the person score (mean of the K scores).
    """
    out = np.asarray(output, np.float64).reshape(-1, 3)
    x = out[:, 1] * region.size + region.left
    y = out[:, 0] * region.size + region.top
    return np.stack([x, y], axis=1), out[:, 2], float(out[:, 2].mean())
