"""In-graph heatmap decoding for phone deployment: peak + DARK refinement as a Keras layer.

``HeatmapPeakDecode`` turns heatmaps [N, H, W, K] into MoveNet-style keypoints [N, 1, K, 3]
= (y, x, score) with y and x in [0, 1] of the input square. It reproduces
``fptflite.codec.decode_heatmaps(method="dark")`` (integer peak, then one Newton step on the
log of the Gaussian-blurred heatmap, clipped to one pixel, none within two pixels of the
border) using only ops that both XNNPACK and the classic TFLite GPU delegate run:

* no ARG_MAX, GATHER, CAST, FLOOR_DIV/MOD, TOPK, NEG or comparison ops: the peak is a weight
  map ``w = relu((hm - max(hm)) / tau + 1)`` (1 at the maximum, 0 one quantization step
  below it; equal maxima share the weight, which gives their mean position);
* the work stays small (about 0.07 ms for 32x32x17 heatmaps on one CPU core): w's row and
  column sums (pooling) give the peak position (depthwise convolutions with a constant
  coordinate row), and, with DARK's separable Gaussian, the blurred heatmap at the 3 x 3
  pixels around the peak (9 values per keypoint) instead of blurring the whole map; the log
  of those 9 values and 3x3 finite differences (depthwise convolutions) give the gradient
  and Hessian of the Taylor step;
* no broadcasting between runtime tensors of different shapes: per-keypoint or per-row
  values are expanded with RESIZE_BILINEAR from size 1.

The ops of a converted file are: DEQUANTIZE (after an int8 body), MAX_POOL_2D,
RESIZE_BILINEAR, SUB/ADD/MUL/DIV, RELU, MAXIMUM/MINIMUM, DEPTHWISE_CONV_2D, LOG,
AVERAGE_POOL_2D, RESHAPE, CONCATENATION.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

# Half of a uint8 LOGISTIC output step (1/256): values one step below the max get weight 0.
PEAK_TOLERANCE = 1.0 / 512.0
DARK_KERNEL = 11
_LOG_FLOOR = 1e-10


def gaussian_taps(kernel: int) -> np.ndarray:
    """1-D Gaussian taps [kernel] with OpenCV's sigma rule, summing to 1 (DARK's blur)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    g = np.exp(-(np.arange(kernel) - (kernel - 1) / 2) ** 2 / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _stencils() -> dict[str, np.ndarray]:
    """3x3 finite-difference stencils [3, 3] (row = y, column = x) of DARK's Taylor step."""
    z = np.zeros((3, 3), np.float32)
    gx, gy, hxx, hyy, hxy = (z.copy() for _ in range(5))
    gx[1, 2], gx[1, 0] = 0.5, -0.5
    gy[2, 1], gy[0, 1] = 0.5, -0.5
    hxx[1, 2], hxx[1, 1], hxx[1, 0] = 1.0, -2.0, 1.0
    hyy[2, 1], hyy[1, 1], hyy[0, 1] = 1.0, -2.0, 1.0
    hxy[2, 2], hxy[0, 2], hxy[2, 0], hxy[0, 0] = 0.25, -0.25, -0.25, 0.25
    return {"gx": gx, "gy": gy, "hxx": hxx, "hyy": hyy, "hxy": hxy}


@keras.utils.register_keras_serializable(package="fptflite")
class HeatmapPeakDecode(keras.layers.Layer):
    """Heatmaps [N, H, W, K] -> keypoints [N, 1, K, 3] as (y, x, score), MoveNet's layout.

    y = (v + 0.5) / H and x = (u + 0.5) / W, where (u, v) is the DARK-refined peak in heatmap
    pixels (pixel centres at integers, as in ``fptflite.codec``): 0 and 1 are the edges of
    the input square. score is the heatmap maximum (a probability for sigmoid heatmaps).

    Args:
        dark_kernel: odd size of DARK's Gaussian blur (11 as in ``codec.decode_heatmaps``).
        peak_tolerance: heatmap values within this of the maximum count as the peak.
    """

    def __init__(self, dark_kernel: int = DARK_KERNEL, peak_tolerance: float = PEAK_TOLERANCE,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(dark_kernel) < 3 or int(dark_kernel) % 2 == 0:
            raise ValueError(f"dark_kernel must be odd and >= 3, got {dark_kernel}")
        if not peak_tolerance > 0:
            raise ValueError(f"peak_tolerance must be > 0, got {peak_tolerance}")
        self.dark_kernel = int(dark_kernel)
        self.peak_tolerance = float(peak_tolerance)

    def build(self, input_shape):
        _, h, w, k = tf.TensorShape(input_shape).as_list()
        if h is None or w is None or k is None:
            raise ValueError(f"HeatmapPeakDecode needs static H, W, K, got {input_shape}")
        self._hwk = (h, w, k)
        g = gaussian_taps(self.dark_kernel)
        r = self.dark_kernel // 2
        # Blur taps around the peak shifted by d in {-1, 0, 1}: kernel[t + r + 1] = g(t + d).
        shifted = np.zeros((3, 2 * r + 3), np.float32)
        for n, d in enumerate((-1, 0, 1)):
            shifted[n, 1 - d:1 - d + 2 * r + 1] = g
        tile = np.ones((1, 1, k, 1), np.float32)
        self._blur_y = [tf.constant(s_.reshape(-1, 1, 1, 1) * tile) for s_ in shifted]
        self._blur_x = [tf.constant(s_.reshape(1, -1, 1, 1) * tile) for s_ in shifted]
        stencils = np.stack([s_.reshape(-1) for s_ in _stencils().values()])  # [5, 9]
        self._stencil = {n: tf.constant(stencils[i].reshape(1, 9, 1, 1) * tile)
                         for i, n in enumerate(_stencils())}
        interior_x = np.zeros(w, np.float32)
        interior_x[2:-2] = 1.0  # as codec's DARK: a step only where 1 < x < W - 2
        interior_y = np.zeros(h, np.float32)
        interior_y[2:-2] = 1.0
        self._row_kernels = {  # weighted sums along W of [N, 1, W, K]: kernels [1, W, K, 1]
            n: tf.constant(v.reshape(1, w, 1, 1) * tile)
            for n, v in (("one", np.ones(w, np.float32)), ("x", np.arange(w, dtype=np.float32)),
                         ("interior", interior_x))}
        self._col_kernels = {  # the same along H of [N, H, 1, K]
            n: tf.constant(v.reshape(h, 1, 1, 1) * tile)
            for n, v in (("one", np.ones(h, np.float32)), ("y", np.arange(h, dtype=np.float32)),
                         ("interior", interior_y))}
        super().build(input_shape)

    @staticmethod
    def _depthwise(x, kernel, padding="SAME"):
        return tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding=padding)

    @staticmethod
    def _step(x, sign: float = 1.0):
        """~1 where sign * x > 1e-4, 0 where sign * x <= 0 (a ramp in between), from
        MUL/RELU/MINIMUM only (no comparison or NEG ops)."""
        return tf.minimum(tf.nn.relu(x * (sign * 1e4)), 1.0)

    def _sum_rows(self, x, name):  # [N, 1, W, K] -> [N, 1, 1, K]
        return self._depthwise(x, self._row_kernels[name], "VALID")

    def _sum_cols(self, x, name):  # [N, H, 1, K] -> [N, 1, 1, K]
        return self._depthwise(x, self._col_kernels[name], "VALID")

    def call(self, heatmaps: tf.Tensor) -> tf.Tensor:
        """Peak weights w [N, H, W, K]; their marginals over rows and columns give the peak
        position and, with the separable Gaussian, the blurred heatmap at the 3 x 3 pixels
        around the peak (9 values per keypoint), whose log gives DARK's derivatives."""
        h, w, k = self._hwk
        hm = tf.cast(heatmaps, tf.float32)
        peak = tf.nn.max_pool2d(hm, ksize=[h, w], strides=[1, 1], padding="VALID")  # [N,1,1,K]
        peak_map = tf.compat.v1.image.resize_bilinear(peak, [h, w], align_corners=False,
                                                      half_pixel_centers=False)
        weights = tf.nn.relu((hm - peak_map) * (1.0 / self.peak_tolerance) + 1.0)
        w_cols = tf.nn.avg_pool2d(weights, [h, 1], [1, 1], "VALID") * float(h)  # [N,1,W,K]
        w_rows = tf.nn.avg_pool2d(weights, [1, w], [1, 1], "VALID") * float(w)  # [N,H,1,K]
        total = self._sum_rows(w_cols, "one")
        px = self._sum_rows(w_cols, "x") / total
        py = self._sum_cols(w_rows, "y") / total
        interior = (self._sum_rows(w_cols, "interior") * self._sum_cols(w_rows, "interior")
                    / (total * total))
        # Blurred heatmap at (peak + (dx, dy)): sum_ij Ay_dy(i) hm(i, j) Ax_dx(j).
        ay = [self._depthwise(w_rows, kern) for kern in self._blur_y]  # [N, H, 1, K]
        ax = [self._depthwise(w_cols, kern) for kern in self._blur_x]  # [N, 1, W, K]
        rows = [tf.nn.avg_pool2d(
            hm * tf.compat.v1.image.resize_bilinear(a, [h, w], align_corners=False,
                                                    half_pixel_centers=False),
            [h, 1], [1, 1], "VALID") for a in ay]  # [N, 1, W, K] per dy
        values = [self._sum_rows(row * a, "one") for row in rows for a in ax]  # (dy, dx)
        logs = tf.math.log(tf.maximum(tf.concat(values, axis=2) * float(h), _LOG_FLOOR))
        d = {n: self._depthwise(logs, kern, "VALID") for n, kern in self._stencil.items()}
        # DARK takes no step where the curvature is not that of a maximum (hxx or hyy >= 0,
        # det <= 0) or near the border: a soft 0/1 mask from arithmetic (no comparisons).
        valid = self._step(d["hxx"], -1.0) * self._step(d["hyy"], -1.0) * interior
        hxx = tf.minimum(d["hxx"], -1e-6)
        hyy = tf.minimum(d["hyy"], -1e-6)
        det = hxx * hyy - d["hxy"] * d["hxy"]
        valid = valid * self._step(det)
        det = tf.maximum(det, 1e-12)
        ox = (d["hxy"] * d["gy"] - hyy * d["gx"]) / det
        oy = (d["hxy"] * d["gx"] - hxx * d["gy"]) / det
        ox = tf.clip_by_value(ox, -1.0, 1.0) * valid
        oy = tf.clip_by_value(oy, -1.0, 1.0) * valid
        x_norm = (px + ox + 0.5) * (1.0 / w)
        y_norm = (py + oy + 0.5) * (1.0 / h)
        # The score leaves through a float DIV: a converter given a QAT body keeps MAX_POOL_2D
        # in int8, and an int8 input to the final CONCATENATION would make it quantize the
        # coordinates too (x * t / t equals x up to one float32 rounding).
        score = peak * total / total
        parts = [tf.reshape(t, [-1, 1, k, 1]) for t in (y_norm, x_norm, score)]
        return tf.concat(parts, axis=3)

    def compute_output_shape(self, input_shape):
        n, _, _, k = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([n, 1, k, 3])

    def get_config(self) -> dict:
        return {**super().get_config(), "dark_kernel": self.dark_kernel,
                "peak_tolerance": self.peak_tolerance}
