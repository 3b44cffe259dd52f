"""Custom Keras layers of the zoo: registered, serializable, and cloneable by tfmot.

No Lambda layers: tensorflow-model-optimization cannot clone them and `.keras` files that
hold them need unsafe deserialization.
"""

from __future__ import annotations

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

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        scale = tf.constant([1.0 / s for s in self.std], dtype=x.dtype)
        offset = tf.constant([-m / s for m, s in zip(self.mean, self.std, strict=True)],
                             dtype=x.dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "mean": self.mean, "std": self.std}
