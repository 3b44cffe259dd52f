"""Losses against values and gradients worked out by hand."""

import numpy as np
import pytest
import tensorflow as tf

from fptflite.losses import RegressiveCrossEntropy, WeightedMSE


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_rce_hand_computed_value():
    # N=1, H=1, W=2, K=2. Keypoint 1 has weight 0.
    y = np.array([[[[1.0, 0.3], [0.0, 0.5]]]], np.float32)
    p = np.array([[[[0.8, 0.9], [0.25, 0.5]]]], np.float32)
    w = np.array([[1.0, 0.0]], np.float32)
    # Only keypoint 0 counts: -log(0.8) and -log(0.75); the mean divides by all 4 elements.
    expected = (-np.log(0.8) - np.log(0.75)) / 4
    got = RegressiveCrossEntropy()(y, p, sample_weight=w)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    got4 = RegressiveCrossEntropy()(y, p, sample_weight=w[:, None, None, :])
    assert float(got4) == pytest.approx(expected, rel=1e-6)
    unweighted = RegressiveCrossEntropy()(y, p)
    assert float(unweighted) == pytest.approx(_bce(y, p).mean(), rel=1e-6)


def test_rce_finite_at_saturated_probabilities():
    y = np.array([[[[1.0, 0.0, 0.5]]]], np.float32)
    p = tf.Variable(np.array([[[[0.0, 1.0, 1.0]]]], np.float32))
    loss_fn = RegressiveCrossEntropy(epsilon=1e-6)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, p)
    grad = tape.gradient(loss, p)
    assert np.isfinite(float(loss))
    eps = 1e-6  # p is clipped to [eps, 1 - eps]
    expected = (-np.log(eps) - np.log(eps) - 0.5 * (np.log(eps) + np.log(1 - eps))) / 3
    assert float(loss) == pytest.approx(expected, rel=5e-3)  # float32 rounding of 1 - eps
    assert np.all(np.isfinite(grad.numpy()))


def test_rce_gradient_matches_formula(rng):
    y = rng.uniform(0, 1, (2, 3, 4, 5)).astype(np.float32)
    p0 = rng.uniform(0.05, 0.95, (2, 3, 4, 5)).astype(np.float32)
    w = (rng.uniform(size=(2, 5)) > 0.3).astype(np.float32)
    p = tf.Variable(p0)
    with tf.GradientTape() as tape:
        loss = RegressiveCrossEntropy()(y, p, sample_weight=w)
    grad = tape.gradient(loss, p).numpy()
    formula = -(y / p0 - (1 - y) / (1 - p0)) * w[:, None, None, :] / y.size
    np.testing.assert_allclose(grad, formula, rtol=1e-4, atol=1e-9)


def test_weighted_mse_matches_simplebaseline_definition(rng):
    y = rng.uniform(0, 1, (2, 4, 3, 5)).astype(np.float32)
    p = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    w = (rng.uniform(size=(2, 5)) > 0.5).astype(np.float32)
    wb = w[:, None, None, :]
    expected = 0.5 * np.mean((p * wb - y * wb) ** 2)  # SimpleBaseline's JointsMSELoss
    assert float(WeightedMSE()(y, p, sample_weight=w)) == pytest.approx(expected, rel=1e-5)


def test_losses_serialize():
    loss = RegressiveCrossEntropy(epsilon=1e-4)
    clone = RegressiveCrossEntropy.from_config(loss.get_config())
    assert clone.epsilon == 1e-4
