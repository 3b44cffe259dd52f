"""BN statistics: finding BN layers (QAT wrappers included), untrained-statistics detection,
settling, and the QAT warning for untrained models."""

import logging

import numpy as np
import pytest
import tf_keras as keras

from fptflite import quantization
from fptflite.models import build_model
from fptflite.models.batch_norm import (
    batch_norm_layers,
    layers_with_initial_statistics,
    settle_batch_norm,
)


def _small_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2, 1, name="conv_b")(x)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn_b")(x)
    return keras.Model(inputs, x)


def test_settled_statistics_are_the_average_of_the_batch_statistics():
    model = _small_model()
    crops = np.random.default_rng(0).uniform(0, 255, (40, 8, 8, 3)).astype(np.float32)
    kernel = model.get_layer("conv_a").kernel.numpy()
    assert sorted(layers_with_initial_statistics(model)) == ["bn_a", "bn_b"]

    passes = settle_batch_norm(model, crops, batch_size=16)  # batches of 16, 16, 8

    assert passes == 3
    feats = keras.Model(model.input, model.get_layer("conv_a").output)(crops).numpy()
    batches = [feats[s:s + 16].reshape(-1, 4) for s in (0, 16, 32)]
    want_mean = np.mean([b.mean(axis=0) for b in batches], axis=0)
    # tf_keras's fused training-mode BN updates the moving variance with the unbiased
    # (n - 1) batch variance.
    want_var = np.mean([b.var(axis=0, ddof=1) for b in batches], axis=0)
    bn = model.get_layer("bn_a")
    np.testing.assert_allclose(bn.moving_mean.numpy(), want_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), want_var, rtol=1e-4)
    assert bn.momentum == 0.99  # restored
    np.testing.assert_array_equal(model.get_layer("conv_a").kernel.numpy(), kernel)
    assert layers_with_initial_statistics(model) == []


def test_batch_norm_layers_are_found_inside_qat_wrappers():
    model = build_model("fasterpose_mnv2_035", (64, 64), feature_stride=16, neck_channels=16)
    qat = quantization.quantize(model)
    names = [bn.name for bn in batch_norm_layers(model)]
    assert len(names) == sum(isinstance(layer, keras.layers.BatchNormalization)
                             for layer in model.layers) > 30
    assert sorted(bn.name for bn in batch_norm_layers(qat)) == sorted(names)


def test_quantizing_an_untrained_model_warns_and_a_settled_one_does_not(caplog):
    model = build_model("fasterpose_mnv2_035", (64, 64), feature_stride=16, neck_channels=16)
    with caplog.at_level(logging.WARNING, logger="absl"):
        untrained = quantization.warn_if_batch_norm_untrained(model)
    assert len(untrained) == len(batch_norm_layers(model))
    assert "never trained" in caplog.text and model.name in caplog.text
    caplog.clear()
    crops = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    settle_batch_norm(model, crops)
    with caplog.at_level(logging.WARNING, logger="absl"):
        assert quantization.warn_if_batch_norm_untrained(model) == []
    assert "never trained" not in caplog.text


def test_settling_needs_crops_and_batch_norm():
    with pytest.raises(ValueError, match="at least one crop"):
        settle_batch_norm(_small_model(), np.zeros((0, 8, 8, 3), np.float32))
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs), name="plain")
    with pytest.raises(ValueError, match="plain has no BatchNormalization"):
        settle_batch_norm(plain, np.zeros((2, 8, 8, 3), np.float32))
