"""In-graph heatmap decoding for phone deployment: peak + DARK refinement as a Keras layer.

``HeatmapPeakDecode`` turns heatmaps [N, H, W, K] into MoveNet-style keypoints [N, 1, K, 3]
= (y, x, score) with y and x in [0, 1] of the input square. It reproduces
``fptflite.codec.decode_heatmaps(method="dark")`` (integer peak, then one Newton step on the
log of the Gaussian-blurred heatmap, clipped to one pixel, none within two pixels of the
border) using only ops
that both XNNPACK and the classic TFLite GPU delegate run:

* no ARG_MAX, GATHER, CAST, FLOOR_DIV/MOD, TOPK or comparison ops: the peak is a weight map
  ``w = relu(hm - max(hm) + tau) / tau`` (1 at the maximum, 0 one quantization step below it;
  equal maxima share the weight, which gives their mean position),
* reductions are pooling ops (MAX_POOL_2D / AVERAGE_POOL_2D over the whole map) or a
  depthwise convolution with an H x W kernel holding a constant coordinate grid,
* no broadcasting between two runtime tensors of different shapes (per-keypoint values are
  expanded back to H x W with RESIZE_BILINEAR from 1 x 1),
* the blur and the derivative stencils are depthwise convolutions with constant kernels.

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
        taps = gaussian_taps(self.dark_kernel)
        tile = np.ones((1, 1, k, 1), np.float32)
        self._blur_y = tf.constant(taps.reshape(-1, 1, 1, 1) * tile)
        self._blur_x = tf.constant(taps.reshape(1, -1, 1, 1) * tile)
        self._stencil = {n: tf.constant(s[:, :, None, None] * tile)
                         for n, s in _stencils().items()}
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        interior = np.zeros((h, w), np.float32)
        interior[2:-2, 2:-2] = 1.0  # as codec's DARK: a step only where 1 < x < W - 2
        # Whole-map weighted sums as depthwise convolutions with an H x W kernel [H, W, K, 1].
        self._sum_kernels = {
            n: tf.constant(np.repeat(g[:, :, None, None], k, axis=2))
            for n, g in (("one", np.ones((h, w), np.float32)), ("x", xs), ("y", ys),
                         ("interior", interior))}
        super().build(input_shape)

    def _depthwise(self, x, kernel, padding="SAME"):
        return tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding=padding)

    def _whole_map_sum(self, x, name):
        return self._depthwise(x, self._sum_kernels[name], padding="VALID")  # [N, 1, 1, K]

    @staticmethod
    def _step(x, sign: float = 1.0):
        """~1 where sign * x > 1e-4, 0 where sign * x <= 0 (a ramp in between), from
        MUL/RELU/MINIMUM only (no comparison or NEG ops)."""
        return tf.minimum(tf.nn.relu(x * (sign * 1e4)), 1.0)

    def _mean_of(self, x, weights, weight_sum):
        """Weighted mean over the map of a runtime map: [N, H, W, K] -> [N, 1, 1, K]."""
        h, w, _ = self._hwk
        pooled = tf.nn.avg_pool2d(x * weights, ksize=[h, w], strides=[1, 1], padding="VALID")
        return pooled * float(h * w) / weight_sum

    def call(self, heatmaps: tf.Tensor) -> tf.Tensor:
        h, w, k = self._hwk
        hm = tf.cast(heatmaps, tf.float32)
        peak = tf.nn.max_pool2d(hm, ksize=[h, w], strides=[1, 1], padding="VALID")  # [N,1,1,K]
        peak_map = tf.compat.v1.image.resize_bilinear(peak, [h, w], align_corners=False,
                                                      half_pixel_centers=False)
        weights = tf.nn.relu(hm - peak_map + self.peak_tolerance) * (1.0 / self.peak_tolerance)
        weight_sum = self._whole_map_sum(weights, "one")
        px = self._whole_map_sum(weights, "x") / weight_sum
        py = self._whole_map_sum(weights, "y") / weight_sum
        interior = self._whole_map_sum(weights, "interior") / weight_sum

        blurred = self._depthwise(self._depthwise(hm, self._blur_y), self._blur_x)
        log_map = tf.math.log(tf.maximum(blurred, _LOG_FLOOR))
        d = {n: self._mean_of(self._depthwise(log_map, s), weights, weight_sum)
             for n, s in self._stencil.items()}
        # DARK takes no step where the curvature is not that of a maximum (hxx or hyy >= 0,
        # det <= 0) or at the border: a soft 0/1 mask from arithmetic (no comparison ops).
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
        # The score as a float weighted mean (= the maximum) rather than the max-pool output:
        # after an int8 body the pooled maximum stays int8, and concatenating it would make
        # the converter quantize the coordinates too.
        score = self._mean_of(hm, weights, weight_sum)
        parts = [tf.reshape(t, [-1, 1, k, 1]) for t in (y_norm, x_norm, score)]
        return tf.concat(parts, axis=3)

    def compute_output_shape(self, input_shape):
        n, _, _, k = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([n, 1, k, 3])

    def get_config(self) -> dict:
        return {**super().get_config(), "dark_kernel": self.dark_kernel,
                "peak_tolerance": self.peak_tolerance}
