"""Heatmap codec: keypoints -> Gaussian heatmaps and heatmaps -> keypoints, in one place.

Coordinate convention (pixel centres, "unbiased"): pixel i of an image covers [i - 0.5,
i + 0.5] and has its centre at coordinate i. A crop of width W maps to a heatmap of width
W / stride so that crop coordinate x and heatmap coordinate u satisfy

    u = (x + 0.5) / stride - 0.5        x = (u + 0.5) * stride - 0.5

With this convention a horizontal flip is exactly u -> W_h - 1 - u on the heatmap, so flip
testing needs no one-column shift (SimpleBaseline's shift compensates for its biased
u = x / stride mapping; ``flip_heatmaps(shift=True)`` reproduces it for such models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fptflite.keypoints import flip_permutation

DECODE_METHODS = ("argmax", "quarter", "dark")
HEATMAP_STRIDE = 4  # heatmaps are always at stride 4 of the input crop


def crop_to_heatmap(xy: np.ndarray, stride: float) -> np.ndarray:
    """Crop-pixel coordinates -> heatmap-pixel coordinates (any shape [..., 2])."""
    return (np.asarray(xy, dtype=np.float64) + 0.5) / stride - 0.5


def heatmap_to_crop(uv: np.ndarray, stride: float) -> np.ndarray:
    """Heatmap-pixel coordinates -> crop-pixel coordinates (any shape [..., 2])."""
    return (np.asarray(uv, dtype=np.float64) + 0.5) * stride - 0.5


def mean_target_logit(sigma: float, heatmap_hw: Sequence[int]) -> float:
    """Logit of the mean value of one keypoint's Gaussian target heatmap.

    A Gaussian of standard deviation ``sigma`` (heatmap pixels, peak 1) sums to about
    2 pi sigma^2 over the plane, so its mean over an [H, W] heatmap is p = 2 pi sigma^2 /
    (H * W) (sigma 2 at 64x48: 25.1 / 3072 = 0.0082, logit -4.80). A sigmoid output whose
    bias starts at logit(p) starts at the mean target instead of p = 0.5 everywhere.

    Args:
        sigma: the target Gaussian's standard deviation in heatmap pixels.
        heatmap_hw: (H, W) of the heatmap.

    Raises:
        ValueError: sigma <= 0, or a Gaussian that does not fit the heatmap (p >= 1).
    """
    h, w = (int(v) for v in heatmap_hw)
    p = 2.0 * math.pi * sigma**2 / (h * w)
    if sigma <= 0 or not 0.0 < p < 1.0:
        raise ValueError(f"no mean target logit for sigma {sigma} on a {h}x{w} heatmap: "
                         f"the mean target {p:.3g} is not in (0, 1)")
    return math.log(p / (1.0 - p))


def encode_keypoints(
    keypoints: np.ndarray,
    heatmap_size: Sequence[int],
    stride: float,
    sigma: float = 2.0,
    subpixel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Encodes one person's keypoints as Gaussian heatmaps.

    Args:
        keypoints: [K, 3] (x, y, visibility) in crop pixels; visibility 0 = not labelled.
        heatmap_size: (H, W) of the heatmaps.
        stride: crop pixels per heatmap pixel (4 for the zoo).
        sigma: Gaussian standard deviation in heatmap pixels.
        subpixel: centre the Gaussian at the exact (sub-pixel) location; False rounds the
            centre to the nearest heatmap pixel as SimpleBaseline does.

    Returns:
        targets [H, W, K] float32 (unnormalised Gaussians, peak 1 at the centre) and
        weights [K] float32: 1 for a labelled keypoint whose Gaussian (3 sigma) overlaps the
        heatmap, else 0 (and its target is all zeros).
    """
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 2 or kps.shape[1] != 3:
        raise ValueError(f"keypoints must be [K, 3], got shape {kps.shape}")
    h, w = (int(v) for v in heatmap_size)
    uv = crop_to_heatmap(kps[:, :2], stride)
    if not subpixel:
        uv = np.floor(uv + 0.5)
    inside = ((uv[:, 0] + 3 * sigma >= 0) & (uv[:, 0] - 3 * sigma <= w - 1)
              & (uv[:, 1] + 3 * sigma >= 0) & (uv[:, 1] - 3 * sigma <= h - 1))
    weights = ((kps[:, 2] > 0) & inside & np.isfinite(uv).all(axis=1)).astype(np.float32)
    uv = np.where(weights[:, None] > 0, uv, 0.0)
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    gx = np.exp(-((xs[None, :] - uv[:, :1]) ** 2) / (2 * sigma**2))  # [K, W]
    gy = np.exp(-((ys[None, :] - uv[:, 1:2]) ** 2) / (2 * sigma**2))  # [K, H]
    targets = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]  # [K, H, W]
    return np.ascontiguousarray(targets.transpose(1, 2, 0), dtype=np.float32), weights


def _argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, H, W, K] -> integer coords [N, K, 2] (x, y) and max values [N, K]."""
    n, h, w, k = heatmaps.shape
    flat = heatmaps.transpose(0, 3, 1, 2).reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    coords = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    return coords, scores.astype(np.float32)


def _gather(hm: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """hm [N, K, H, W]; x, y int [N, K] (clipped) -> values [N, K]."""
    n, k, h, w = hm.shape
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    return hm[np.arange(n)[:, None], np.arange(k)[None, :], y, x]


def _quarter_offsets(hm: np.ndarray, coords: np.ndarray) -> np.ndarray:
    n, k, h, w = hm.shape
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)
    dx = _gather(hm, x + 1, y) - _gather(hm, x - 1, y)
    dy = _gather(hm, x, y + 1) - _gather(hm, x, y - 1)
    ok_x = (x > 0) & (x < w - 1)
    ok_y = (y > 0) & (y < h - 1)
    return np.stack([np.where(ok_x, 0.25 * np.sign(dx), 0.0),
                     np.where(ok_y, 0.25 * np.sign(dy), 0.0)], axis=-1)


def _blur_matrix(size: int, kernel: int) -> np.ndarray:
    """[size, size] matrix of a 1-D Gaussian blur with zero padding (OpenCV's sigma rule)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    g = np.exp(-(np.arange(kernel) - (kernel - 1) / 2) ** 2 / (2 * sigma**2))
    g /= g.sum()
    m = np.zeros((size, size), np.float32)
    b = (kernel - 1) // 2
    for i in range(size):
        for t in range(kernel):
            j = i + t - b
            if 0 <= j < size:
                m[i, j] = g[t]
    return m


def _blur(hm: np.ndarray, kernel: int) -> np.ndarray:
    """DARK's max-preserving Gaussian blur of [N, K, H, W] with zero padding."""
    n, k, h, w = hm.shape
    out = np.einsum("ij,nkjl,ml->nkim", _blur_matrix(h, kernel), hm, _blur_matrix(w, kernel),
                    optimize=True)
    orig_max = hm.reshape(n, k, -1).max(axis=2)[..., None, None]
    new_max = out.reshape(n, k, -1).max(axis=2)[..., None, None]
    return out * np.where(new_max > 0, orig_max / np.maximum(new_max, 1e-12), 0.0)


def _dark_offsets(hm: np.ndarray, coords: np.ndarray, kernel: int) -> np.ndarray:
    n, k, h, w = hm.shape
    lg = np.log(np.maximum(_blur(hm, kernel), 1e-10))
    x = coords[..., 0].astype(np.int64)
    y = coords[..., 1].astype(np.int64)

    def v(dx, dy):
        return _gather(lg, x + dx, y + dy)

    c = v(0, 0)
    gx = 0.5 * (v(1, 0) - v(-1, 0))
    gy = 0.5 * (v(0, 1) - v(0, -1))
    hxx = v(1, 0) - 2 * c + v(-1, 0)
    hyy = v(0, 1) - 2 * c + v(0, -1)
    hxy = 0.25 * (v(1, 1) - v(1, -1) - v(-1, 1) + v(-1, -1))
    det = hxx * hyy - hxy**2
    # As the reference DARK: no Taylor step where the peak is within two pixels of the edge,
    # because the blur's zero padding bends the log-heatmap there and pulls the step inward.
    interior = (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    ok = interior & (np.abs(det) > 1e-12) & (hxx < 0) & (hyy < 0)
    safe = np.where(ok, det, 1.0)
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    off = np.stack([np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)], axis=-1)
    return np.clip(off, -1.0, 1.0)  # a Newton step beyond a pixel is noise, not signal


def decode_heatmaps(
    heatmaps: np.ndarray,
    method: str = "dark",
    dark_kernel: int = 11,
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes heatmaps to keypoint coordinates.

    Args:
        heatmaps: [N, H, W, K] float (probabilities or linear scores; uint8-quantized steps
            of 1/256 are fine: DARK smooths ties away and clamps zeros before the log).
        method: "argmax" (integer peak), "quarter" (SimpleBaseline's quarter-pixel shift
            towards the higher neighbour) or "dark" (DARK, CVPR 2020: max-preserving Gaussian
            blur, log, second-order Taylor step around the peak; held back, as in the
            reference implementation, unless 1 < x < W - 2 and 1 < y < H - 2).
        dark_kernel: DARK's blur kernel size (11 for sigma 2 at 64x48, as in the paper).

    Returns:
        coords [N, K, 2] as (x, y) in heatmap pixels (float64) and scores [N, K] (the
        heatmap maximum, float32).
    """
    if method not in DECODE_METHODS:
        raise ValueError(f"unknown decode method {method!r}; choose one of {DECODE_METHODS}")
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [N, H, W, K], got shape {hm.shape}")
    coords, scores = _argmax(hm)
    if method == "argmax":
        return coords, scores
    hm_nkhw = hm.transpose(0, 3, 1, 2)
    if method == "quarter":
        return coords + _quarter_offsets(hm_nkhw, coords), scores
    return coords + _dark_offsets(hm_nkhw, coords, dark_kernel), scores


def flip_heatmaps(
    heatmaps: np.ndarray,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
    shift: bool = False,
) -> np.ndarray:
    """Maps heatmaps predicted on a horizontally flipped image back to the original image.

    Args:
        heatmaps: [N, H, W, K] predicted on flipped inputs.
        flip_pairs: (left, right) keypoint index pairs to swap; None: the COCO (K = 17) or
            MPII (K = 16) pairs.
        shift: shift the result one column right, as SimpleBaseline does for its biased
            coordinate mapping; not needed with this codec's pixel-centre mapping.

    Returns:
        [N, H, W, K] heatmaps aligned with the unflipped image.
    """
    hm = np.asarray(heatmaps)
    pairs = None if flip_pairs is None else tuple(flip_pairs)
    out = hm[:, :, ::-1, :][..., flip_permutation(hm.shape[-1], pairs)]
    if shift:
        out = np.concatenate([out[:, :, :1], out[:, :, :-1]], axis=2)
    return np.ascontiguousarray(out)


def flip_keypoints(
    keypoints: np.ndarray,
    width: float,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Mirrors keypoints [..., K, >=2] of an image ``width`` pixels wide and swaps pairs
    (``flip_pairs`` None: the COCO or MPII pairs, by K)."""
    kps = np.array(keypoints, dtype=np.float64, copy=True)
    kps[..., 0] = width - 1 - kps[..., 0]
    pairs = None if flip_pairs is None else tuple(flip_pairs)
    return kps[..., flip_permutation(kps.shape[-2], pairs), :]


def encode_keypoints_tf(keypoints, heatmap_size: Sequence[int], stride: float,
                        sigma: float = 2.0):
    """TensorFlow twin of ``encode_keypoints`` (sub-pixel centres) for tf.data pipelines.

    Args:
        keypoints: float tensor [K, 3] (x, y, v) in crop pixels.

    Returns:
        targets [H, W, K] float32 and weights [K] float32, equal to the numpy version.
    """
    # lazy: TensorFlow only for the tf.data twin; the numpy codec stays importable without it
    import tensorflow as tf

    h, w = (int(v) for v in heatmap_size)
    kps = tf.cast(keypoints, tf.float32)
    uv = (kps[:, :2] + 0.5) / stride - 0.5
    inside = ((uv[:, 0] + 3 * sigma >= 0) & (uv[:, 0] - 3 * sigma <= w - 1)
              & (uv[:, 1] + 3 * sigma >= 0) & (uv[:, 1] - 3 * sigma <= h - 1))
    valid = (kps[:, 2] > 0) & inside & tf.reduce_all(tf.math.is_finite(uv), axis=1)
    weights = tf.cast(valid, tf.float32)
    uv = tf.where(valid[:, None], uv, 0.0)
    gx = tf.exp(-tf.square(tf.range(w, dtype=tf.float32)[None, :] - uv[:, :1]) / (2 * sigma**2))
    gy = tf.exp(-tf.square(tf.range(h, dtype=tf.float32)[None, :] - uv[:, 1:]) / (2 * sigma**2))
    targets = gy[:, :, None] * gx[:, None, :] * weights[:, None, None]
    return tf.transpose(targets, (1, 2, 0)), weights
