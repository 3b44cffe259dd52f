"""In-graph heatmap decoding for phone deployment: peak + DARK refinement as a Keras layer.

``HeatmapPeakDecode`` turns heatmaps [N, H, W, K] into MoveNet-style keypoints [N, 1, K, 3]
= (y, x, score) with y and x in [0, 1] of the input square. It reproduces
``fptflite.codec.decode_heatmaps(method="dark")``: the integer peak is ``np.argmax``'s (the
first maximum in raster order, also among tied uint8 values), then one Newton step on the log
of the Gaussian-blurred heatmap, clipped to one pixel, taken (as codec's) only where
hxx < 0, hyy < 0, det != 0 and the peak is two pixels or more from the border. It uses only
ops that both XNNPACK and the classic TFLite GPU delegate run:

* no ARG_MAX, GATHER, CAST, FLOOR_DIV/MOD, TOPK, NEG or comparison ops. The first peak row
  comes from the row maxima: rows whose maximum is the heatmap maximum get a score n - i, and
  the largest score is the first such row (a max pool). That row's values (one weighted
  pass over the map) give the first peak column the same way. Scores are whole numbers
  <= H, W, so both stages are exact in fp16 as well;
* DARK's 3 x 3 blurred values around the peak come from three weighted passes over the map
  (Gaussian weights of rows peak-1..peak+1, computed elementwise from the peak row) and nine
  weighted sums along W of their results; their logs give the Taylor step elementwise, with
  det > 0 and det < 0 divided separately so that every divisor has an fp16-normal floor;
* few and cheap ops. Measured: XNNPACK runs elementwise ops on small tensors inline at any
  thread count, while depthwise convolutions with long kernels, large-window pooling,
  concatenations and slices cost a thread dispatch each (1-3 us) and long kernels are slow;
  reductions are therefore average/max pools whose output is small. Small broadcasts are
  RESIZE_BILINEAR from size 1. The four weighted passes over the map run on one TRANSPOSE of
  it, [N, H, K, W], where the row weights [N, H, K, 1] are a one-channel multiplier (the
  GPU delegate's mask case; XNNPACK's fastest broadcast). Against bilinear broadcasts of
  the weights to the full map this halved the decode on the CPU (1 thread, same run:
  32x32x17 maps 47 -> 23 us, 64x64x17 190 -> 76 us). TRANSPOSE has a kernel in the GPU
  delegate's OpenCL backend; the OpenGL backend's shader registry, as read in TF's source,
  has none.

The ops of a converted file are: DEQUANTIZE (after an int8 body; a QAT body also keeps the
row-maximum MAX_POOL_2D and the TRANSPOSE in int8), TRANSPOSE, MAX_POOL_2D, AVERAGE_POOL_2D,
RESIZE_BILINEAR, ADD/SUB/MUL/DIV, MAXIMUM/MINIMUM, RELU, EXP, LOG, RESHAPE, CONCATENATION.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

# Half of a uint8 LOGISTIC output step (1/256): values one step below the max are no peak.
PEAK_TOLERANCE = 1.0 / 512.0
DARK_KERNEL = 11
# A row (column) whose maximum is within (1 - 1 / _SHARPEN) * tolerance of the peak counts as
# holding it; with uint8 heatmaps the distance is 0 or >= 3 tolerances, so this is exact.
_SHARPEN = 64.0
# The 9 blurred values are scaled by _VALUE_SCALE so that any nonzero blurred uint8 value
# (>= 3e-7 of the heatmap scale) stays an fp16-normal number above the log floor.
_VALUE_SCALE = 1024.0
_LOG_FLOOR = 6.2e-5
# Derivatives are kept at 4x (Hessian terms at 16x, the offsets unchanged): determinants down
# to 6e-6 clear the fp16-normal floor, products of derivatives stay below fp16's maximum.
_DET_FLOOR = 1e-4
_STEP_RAMP = 1e-4  # the step is taken in full where det and -hxx, -hyy (4x) exceed this


def gaussian_sigma(kernel: int) -> float:
    """DARK's blur sigma for an odd ``kernel`` (OpenCV's rule, as ``codec``)."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_taps(kernel: int) -> np.ndarray:
    """1-D Gaussian taps [kernel] with OpenCV's sigma rule, summing to 1 (DARK's blur)."""
    sigma = gaussian_sigma(kernel)
    g = np.exp(-(np.arange(kernel) - (kernel - 1) / 2) ** 2 / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _expand(x, h: int, w: int):
    """[N, 1 or h, 1 or w, C] -> [N, h, w, C] by copying (bilinear resize from size 1)."""
    return tf.compat.v1.image.resize_bilinear(x, [h, w], align_corners=False,
                                              half_pixel_centers=False)


def _clip1(x):
    return tf.minimum(tf.maximum(x, -1.0), 1.0)


def _maximum(a, b):
    """max(a, b) as b + relu(a - b): a MAXIMUM of two runtime tensors makes the PTQ converter
    requantize both inputs to one int8 scale even with the op denylisted."""
    return b + tf.nn.relu(a - b)


def _ramp_below_zero(x):
    """1 where x <= -_STEP_RAMP, 0 where x >= 0, linear in between (no comparison ops)."""
    return tf.nn.relu(tf.maximum(x, -_STEP_RAMP) * (-1.0 / _STEP_RAMP))


def _taylor_offsets(logs, inside):
    """DARK's Newton step from the logs of the blurred heatmap around the peak.

    Args:
        logs: logs[dx + 1][dy + 1], each [N, 1, 1, K].
        inside: [N, 1, 1, K] 1 where the peak is far enough from the border, else 0.

    Returns:
        (dy, dx) [N, 1, 1, K] each, clipped to [-1, 1]; 0 where codec takes no step.
    """
    lg = logs
    gx = (lg[2][1] - lg[0][1]) * 2.0  # 4x the central differences
    gy = (lg[1][2] - lg[1][0]) * 2.0
    centre = lg[1][1] * 2.0
    hxx = (lg[2][1] + lg[0][1] - centre) * 4.0
    hyy = (lg[1][2] + lg[1][0] - centre) * 4.0
    hxy = lg[2][2] - lg[2][0] - lg[0][2] + lg[0][0]
    det = hxx * hyy - hxy * hxy
    neg_det = hxy * hxy - hxx * hyy
    # codec: dx = -(hyy * gx - hxy * gy) / det, dy = -(hxx * gy - hxy * gx) / det, taken where
    # hxx < 0, hyy < 0, det != 0. 1 / det from the branch det > 0 or det < 0 that applies,
    # each with a divisor floor (so no 0 / 0), and 0 where no step is taken.
    curvature = _maximum(hxx, hyy)
    take_pos = _ramp_below_zero(_maximum(curvature, neg_det))  # det > 0
    take_neg = _ramp_below_zero(_maximum(curvature, det))  # det < 0
    # max(det, floor) and max(-det, floor) as floor + relu(.): a MAXIMUM with a constant made
    # the PTQ converter put an int8 QUANTIZE/DEQUANTIZE pair on det (denylist or not).
    inv_det = (take_pos / (_DET_FLOOR + tf.nn.relu(det - _DET_FLOOR))
               - take_neg / (_DET_FLOOR + tf.nn.relu(neg_det - _DET_FLOOR))) * inside
    dx = _clip1((hxy * gy - hyy * gx) * inv_det)
    dy = _clip1((hxy * gx - hxx * gy) * inv_det)
    return dy, dx


def _inside(n_minus_p, n: int):
    """1 where 2 <= p <= n - 3 (codec's 1 < p < n - 2), else 0, from n - p [N, 1, 1, K]."""
    nearest_border = float(n - 1) - n_minus_p - tf.nn.relu(float(n + 1) - 2.0 * n_minus_p)
    return tf.minimum(tf.nn.relu(nearest_border), 1.0)  # min(n - 1 - (n - p), (n - p) - 2)


@keras.utils.register_keras_serializable(package="fptflite")
class HeatmapPeakDecode(keras.layers.Layer):
    """Heatmaps [N, H, W, K] -> keypoints [N, 1, K, 3] as (y, x, score), MoveNet's layout.

    y = (v + 0.5) / H and x = (u + 0.5) / W, where (u, v) is the DARK-refined peak in heatmap
    pixels (pixel centres at integers, as in ``fptflite.codec``): 0 and 1 are the edges of
    the input square. score is the heatmap maximum (a probability for sigmoid heatmaps).
    Heatmaps lie in [0, 1] (sigmoid outputs); on the uint8 grid of an int8 body's LOGISTIC
    the integer peak is exactly ``np.argmax``'s, with float heatmaps values within
    ``peak_tolerance`` of the maximum count as tied with it.

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
        sigma = gaussian_sigma(self.dark_kernel)
        r = self.dark_kernel // 2
        self._gauss_exponent = -1.0 / (2.0 * sigma * sigma)
        norm = 1.0 / np.exp(-np.arange(-r, r + 1) ** 2 / (2.0 * sigma * sigma)).sum()
        # Taps times the average pools' lengths and sqrt(_VALUE_SCALE) each.
        self._tap_scale_y = float(norm * h * np.sqrt(_VALUE_SCALE))
        self._tap_scale_x = float(norm * w * np.sqrt(_VALUE_SCALE))
        self._tap_limit = float((r + 1) ** 2)  # taps are 0 from distance r + 1 on
        ones = np.ones((1, 1, 1, k), np.float32)
        # n - index: the first row (column) holding the peak has the largest.
        self._rank_rows = tf.constant(np.arange(h, 0, -1, dtype=np.float32)
                                      .reshape(1, h, 1, 1) * ones)
        self._rank_cols = tf.constant(np.arange(w, 0, -1, dtype=np.float32)
                                      .reshape(1, 1, w, 1) * ones)
        super().build(input_shape)

    def _first_peak(self, maxima, peak, rank, window):
        """Maxima of the rows [N, H, 1, K] (or of the peak row's columns [N, 1, W, K]) and the
        peak expanded like them -> n - (first index holding the peak) [N, 1, 1, K], and the
        per-index scores (n - index where the peak is, else 0)."""
        holds = tf.minimum(tf.nn.relu((maxima - peak + self.peak_tolerance)
                                      * (_SHARPEN / self.peak_tolerance)), 1.0)
        score = holds * rank
        return tf.nn.max_pool2d(score, window, 1, "VALID"), score

    def _gaussian_taps(self, offset, scale: float):
        """offset p - i [..] -> DARK's taps G(p + d - i) * scale for d = -1, 0, 1."""
        taps = []
        for d in (-1.0, 0.0, 1.0):
            u = offset + d
            # Squared distances capped at the support limit: exp() of far rows would be
            # subnormal floats (slow on CPUs without flush-to-zero); their taps are 0 anyway.
            sq = tf.minimum(u * u, self._tap_limit)
            support = tf.minimum(self._tap_limit - sq, 1.0)
            taps.append(tf.exp(sq * self._gauss_exponent) * (support * scale))
        return taps

    def _weighted_rows(self, hm_t, weights):
        """Mean over rows of the heatmaps weighted per row and keypoint.

        Args:
            hm_t: heatmaps with W last [N, H, K, W].
            weights: [N, H, 1, K] (the same memory order as [N, H, K, 1], so a RESHAPE
                makes them a one-channel multiplier that broadcasts along W).

        Returns:
            sum_i weights[i, k] * hm[i, j, k] / H as [N, 1, W, K].
        """
        h, _, k = self._hwk
        rows = tf.nn.avg_pool2d(hm_t * tf.reshape(weights, [-1, h, k, 1]), [h, 1], 1,
                                "VALID")  # [N, 1, K, W]
        return tf.transpose(rows, [0, 1, 3, 2])

    def _blurred_logs(self, hm_t, rows_offset, cols_offset):
        """log of DARK's blurred heatmap (times a constant) at the 3 x 3 pixels around the
        peak, from the heatmaps with W last [N, H, K, W]: logs[dx + 1][dy + 1] [N, 1, 1, K]."""
        _, w, _ = self._hwk
        ay = self._gaussian_taps(rows_offset, self._tap_scale_y)  # [N, H, 1, K] each
        ax = self._gaussian_taps(cols_offset, self._tap_scale_x)  # [N, 1, W, K] each
        blurred_rows = [self._weighted_rows(hm_t, a) for a in ay]  # [N, 1, W, K]: rows p+dy
        return [[tf.math.log(tf.maximum(tf.nn.avg_pool2d(row * a, [1, w], 1, "VALID"),
                                        _LOG_FLOOR)) for row in blurred_rows] for a in ax]

    def call(self, heatmaps: tf.Tensor) -> tf.Tensor:
        h, w, k = self._hwk
        hm = tf.cast(heatmaps, tf.float32)
        row_max = tf.nn.max_pool2d(hm, [1, w], 1, "VALID")  # [N, H, 1, K]
        peak = tf.nn.max_pool2d(row_max, [h, 1], 1, "VALID")  # [N, 1, 1, K]
        peak_rows = _expand(peak, h, 1)  # [N, H, 1, K]
        peak_cols = tf.reshape(peak_rows, [-1, 1, w, k]) if h == w else _expand(peak, 1, w)
        h_minus_p, row_scores = self._first_peak(row_max, peak_rows, self._rank_rows, [h, 1])
        h_minus_p_rows = _expand(h_minus_p, h, 1)
        peak_row = tf.nn.relu(row_scores - h_minus_p_rows + 1.0)  # one-hot [N, H, 1, K]
        hm_t = tf.transpose(hm, [0, 1, 3, 2])  # [N, H, K, W]: row weights broadcast along W
        peak_row_values = self._weighted_rows(hm_t, peak_row) * float(h)  # [N, 1, W, K]
        w_minus_q, _ = self._first_peak(peak_row_values, peak_cols, self._rank_cols, [1, w])
        logs = self._blurred_logs(hm_t, self._rank_rows - h_minus_p_rows,
                                  self._rank_cols - _expand(w_minus_q, 1, w))
        dy, dx = _taylor_offsets(logs, _inside(h_minus_p, h) * _inside(w_minus_q, w))
        y = (float(h) + 0.5 - h_minus_p + dy) * (1.0 / h)
        x = (float(w) + 0.5 - w_minus_q + dx) * (1.0 / w)
        # The score leaves through a float op (exact on the uint8 grid): from a QAT body the
        # converter keeps the max pools in int8, and an int8 input to the final CONCATENATION
        # would make it quantize the coordinates too.
        score = (peak + 1.0) - 1.0
        return tf.concat([tf.reshape(t, [-1, 1, k, 1]) for t in (y, x, score)], axis=3)

    def compute_output_shape(self, input_shape):
        n, _, _, k = tf.TensorShape(input_shape).as_list()
        return tf.TensorShape([n, 1, k, 3])

    def get_config(self) -> dict:
        return {**super().get_config(), "dark_kernel": self.dark_kernel,
                "peak_tolerance": self.peak_tolerance}
