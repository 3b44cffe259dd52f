"""Losses against values and gradients worked out by hand; the logits view of FasterPose."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from fptflite.losses import RegressiveCrossEntropy, WeightedMSE, loss_for
from fptflite.models import build_model, heatmap_logits_model


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
    loss = RegressiveCrossEntropy(from_logits=True, epsilon=1e-4)
    clone = RegressiveCrossEntropy.from_config(loss.get_config())
    assert clone.epsilon == 1e-4 and clone.from_logits
    assert loss_for("rce").from_logits and isinstance(loss_for("rce"), RegressiveCrossEntropy)
    assert isinstance(loss_for("mse"), WeightedMSE)
    with pytest.raises(ValueError, match="unknown loss 'bce'"):
        loss_for("bce")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_rce_from_logits_equals_numpy_reference(rng):
    z = rng.normal(0, 3, (2, 3, 4, 5))  # |z| < 12: the probability form is not clipped
    y = rng.uniform(0, 1, (2, 3, 4, 5))
    w = (rng.uniform(size=(2, 5)) > 0.3).astype(np.float64)
    p = _sigmoid(z)  # float64 reference
    expected = np.sum(-(y * np.log(p) + (1 - y) * np.log(1 - p)) * w[:, None, None, :]) / y.size
    got = RegressiveCrossEntropy(from_logits=True)(y.astype(np.float32), z.astype(np.float32),
                                                   sample_weight=w.astype(np.float32))
    assert float(got) == pytest.approx(expected, rel=2e-6)
    # The same value as the probability form where p is not clipped.
    prob = RegressiveCrossEntropy()(y.astype(np.float32), p.astype(np.float32),
                                    sample_weight=w.astype(np.float32))
    assert float(prob) == pytest.approx(expected, rel=1e-4)


def test_rce_logit_gradients_are_p_minus_y_even_when_saturated():
    # Confidently wrong (z = -20 with y = 1; z = +20 with y = 0), confidently right, neutral.
    z0 = np.array([[[[-20.0, 20.0, -20.0, 20.0, 0.0, 3.0]]]], np.float32)
    y = np.array([[[[1.0, 0.0, 0.0, 1.0, 0.5, 0.2]]]], np.float32)
    z = tf.Variable(z0)
    with tf.GradientTape() as tape:
        loss = RegressiveCrossEntropy(from_logits=True)(y, z)
    grad = tape.gradient(loss, z).numpy()
    analytic = (_sigmoid(z0.astype(np.float64)) - y) / y.size  # dL/dz = (p - y) / N
    np.testing.assert_allclose(grad, analytic, rtol=1e-6, atol=1e-12)
    assert grad[0, 0, 0, 0] == pytest.approx(-1 / 6, rel=1e-6)  # not 0: the pixel still learns
    assert float(loss) == pytest.approx(np.mean(
        [20, 20, 2.06e-9, 2.06e-9, np.log(2), 3 * 0.8 + np.log1p(np.exp(-3))]), rel=1e-6)
    # The probability form (sigmoid, then a clipped log) loses that gradient entirely.
    with tf.GradientTape() as tape:
        loss = RegressiveCrossEntropy()(y, tf.sigmoid(z))
    assert tape.gradient(loss, z).numpy()[0, 0, 0, 0] == 0.0


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("fasterpose_mnv2_035", (64, 64), 17, neck_channels=8)


def test_logits_view_shares_the_model_and_feeds_its_sigmoid(tiny_model, rng):
    logits_model = heatmap_logits_model(tiny_model)
    assert [v.ref() for v in logits_model.trainable_variables] == \
        [v.ref() for v in tiny_model.trainable_variables]
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    logits = logits_model(x).numpy()
    assert logits.shape == (2, 16, 16, 17)
    np.testing.assert_array_equal(tf.sigmoid(logits).numpy(), tiny_model(x).numpy())
    with pytest.raises(ValueError, match="not a sigmoid"):
        heatmap_logits_model(build_model("simplebaseline_mnv2", (64, 64)))


def test_logits_view_of_the_qat_model(tiny_model, rng):
    from fptflite import quantization

    qat = quantization.quantize(tiny_model)
    assert qat.layers[-1].name != "heatmaps"  # wrapped by tfmot (quant_heatmaps)
    logits = heatmap_logits_model(qat)
    x = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    p = qat(x).numpy()
    # The QAT output fake-quantises the sigmoid to 1/256 steps (or is the plain sigmoid).
    np.testing.assert_allclose(tf.sigmoid(logits(x)).numpy(), p, atol=1 / 256)
    assert {v.ref() for v in logits.trainable_variables} <= \
        {v.ref() for v in qat.trainable_variables}


def test_mixed_precision_heatmaps_are_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model("fasterpose_mnv2_035", (64, 64), 17)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.output.dtype == tf.float32  # float16 would round p to 1.0 past z ~ 8.3
    assert heatmap_logits_model(model).output.dtype == tf.float16
    z = tf.constant(np.full((1, 1, 1, 1), 12.0), tf.float16)
    loss = RegressiveCrossEntropy(from_logits=True)(np.zeros((1, 1, 1, 1)), z)
    assert float(loss) == pytest.approx(12 + np.log1p(np.exp(-12)), rel=1e-6)
