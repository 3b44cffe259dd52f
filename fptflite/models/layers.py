"""Custom Keras layers of the zoo: registered, serializable, and cloneable by tfmot.

No Lambda layers: tensorflow-model-optimization cannot clone them and `.keras` files that
hold them need unsafe deserialization.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="fptflite")
class DepthToSpace(keras.layers.Layer):
    """Rearranges channels into space with ``tf.nn.depth_to_space``.

    Input [N, h, w, K*r*r] -> output [N, h*r, w*r, K]. Output channel k at position
    (y*r + i, x*r + j) is input channel (i*r + j)*K + k at (y, x). It converts to a single
    TFLite DEPTH_TO_SPACE op (int8 when quantized).

    Args:
        block_size: the upscale factor r (>= 2).
    """

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        if int(block_size) < 2:
            raise ValueError(f"DepthToSpace block_size must be >= 2, got {block_size}")
        self.block_size = int(block_size)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        n, h, w, c = tf.TensorShape(input_shape).as_list()
        r = self.block_size
        if c is not None and c % (r * r):
            raise ValueError(f"channels {c} are not divisible by block_size^2 = {r * r}")
        return tf.TensorShape([
            n,
            None if h is None else h * r,
            None if w is None else w * r,
            None if c is None else c // (r * r),
        ])

    def get_config(self) -> dict:
        return {**super().get_config(), "block_size": self.block_size}


@keras.utils.register_keras_serializable(package="fptflite")
class ImageNormalization(keras.layers.Layer):
    """Maps RGB pixels in [0, 255] to the backbone's input range: (x - mean) / std.

    Keeping it inside the model lets the deployed .tflite take raw camera pixels (uint8 input
    with scale ~1) while the normalisation travels with the file.

    Args:
        mean: per-channel RGB mean, 3 floats in pixel units.
        std: per-channel RGB standard deviation, 3 floats in pixel units.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got mean={mean}, std={std}")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        # Set (not serialized) by fptflite.quantization for QAT: the offset is rounded to the
        # int32 bias grid of the int8 file, step = input scale x weight scale per channel.
        self.int8_bias_steps: list[float] | None = None

    def offsets(self) -> list[float]:
        """The per-channel offsets -mean / std (on the int8 bias grid when simulated)."""
        offsets = [-m / s for m, s in zip(self.mean, self.std, strict=True)]
        if self.int8_bias_steps:  # rounded half away from zero, as TFLite quantizes biases
            offsets = [math.copysign(math.floor(abs(o / q) + 0.5), o) * q for o, q in
                       zip(offsets, self.int8_bias_steps, strict=True)]
        return offsets

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        # A 1x1 depthwise conv with bias (not x * scale + offset): it converts to one
        # DEPTHWISE_CONV_2D whose int8 form is exact (per-channel weight = 127 steps), where
        # MUL + ADD would round the product to a range shared with the sum (measured: 0.7
        # int8 steps of error after the first layer, which QAT cannot see).
        scale = tf.constant([[[[1.0 / s] for s in self.std]]], dtype=x.dtype)  # [1, 1, 3, 1]
        offset = tf.constant(self.offsets(), dtype=x.dtype)
        return tf.nn.bias_add(tf.nn.depthwise_conv2d(x, scale, [1, 1, 1, 1], "VALID"), offset)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}
