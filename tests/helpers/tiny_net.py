"""The tiny conv net the runtime tests convert: [N, S, S, 3] 0..255 -> [N, S, S, 5] sigmoid
maps, with the random calibration crops its int8 files are made with."""

import numpy as np
import tensorflow as tf
import tf_keras as keras


def tiny_net(size: int) -> tuple[keras.Model, np.ndarray]:
    """(the seeded model, 16 crops [16, size, size, 3] float32 uniform in 0..255)."""
    tf.keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Rescaling(1 / 127.5, -1),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"),
        keras.layers.Conv2D(5, 1),
        keras.layers.Activation("sigmoid")])
    crops = np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype(np.float32)
    return model, crops
