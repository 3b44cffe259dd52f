"""Heatmap losses: regressive cross-entropy (FasterPose) and weighted MSE (SimpleBaseline).

Three losses are registered by name (``loss_for``): "rce" (RCE on the logits of a sigmoid
output), "mse" (MSE of a linear output) and "sigmoid_mse" (MSE of a sigmoid output's
probabilities: the sigmoid without the cross-entropy, which the loss study uses to tell the
two apart).

Per-keypoint weights (visibility) enter as Keras ``sample_weight`` of shape [N, 1, 1, K]
(the training pipeline yields them so); [N, K] is accepted and reshaped. Both losses return
the weighted mean over N, H, W and K: sum(w * l) / (N * H * W * K), so a keypoint with
weight 0 contributes nothing and does not change the normaliser (as in SimpleBaseline).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

RCE_EPSILON = 1e-6


def _weights_like(sample_weight, y_pred: tf.Tensor):
    if sample_weight is None:
        return None
    w = tf.convert_to_tensor(sample_weight, dtype=y_pred.dtype)
    if w.shape.rank == 2:  # [N, K] -> [N, 1, 1, K]
        w = w[:, tf.newaxis, tf.newaxis, :]
    return w


class _HeatmapLoss(keras.losses.Loss):
    """Element-wise heatmap loss with [N, K] or [N, 1, 1, K] keypoint weights."""

    def __init__(self, name: str, reduction=keras.losses.Reduction.SUM_OVER_BATCH_SIZE):
        super().__init__(name=name, reduction=reduction)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        return super().__call__(y_true, y_pred, _weights_like(sample_weight, y_pred))


@keras.utils.register_keras_serializable(package="fptflite")
class RegressiveCrossEntropy(_HeatmapLoss):
    """Regressive cross-entropy: binary cross-entropy with continuous targets in [0, 1].

    loss = -(y log p + (1 - y) log(1 - p)) with p = sigmoid(z), averaged with keypoint weights
    over N, H, W, K.

    With ``from_logits=True`` (what training uses) the loss is computed from the logits z in
    the stable form max(z, 0) - z y + log(1 + exp(-|z|)), whose gradient is exactly p - y for
    any z: a confidently wrong pixel (z = -20, y = 1) still gets gradient -1. The probability
    form clips p to [epsilon, 1 - epsilon], so its gradient is zero outside that range (use it
    only to score sigmoid outputs, e.g. of an inference model).

    Args:
        from_logits: y_pred holds logits (float16 logits are computed in float32).
        epsilon: probability form only: p is clipped to [epsilon, 1 - epsilon] so that p = 0
            and p = 1 give finite values. Default 1e-6, well below the smallest non-zero step
            of an int8 sigmoid output (1/256).

    Call args:
        y_true: [N, H, W, K] Gaussian targets in [0, 1].
        y_pred: [N, H, W, K] logits (``from_logits``) or sigmoid probabilities.
        sample_weight: [N, K] or [N, 1, 1, K] keypoint weights.
    """

    def __init__(self, from_logits: bool = False, epsilon: float = RCE_EPSILON,
                 name: str = "rce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = bool(from_logits)
        self.epsilon = float(epsilon)

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = tf.convert_to_tensor(y_pred)
        if self.from_logits and y_pred.dtype != tf.float64:
            y_pred = tf.cast(y_pred, tf.float32)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        if self.from_logits:
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred)
        p = tf.clip_by_value(y_pred, self.epsilon, 1.0 - self.epsilon)
        return -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits,
                "epsilon": self.epsilon}


@keras.utils.register_keras_serializable(package="fptflite")
class WeightedMSE(_HeatmapLoss):
    """SimpleBaseline's JointsMSELoss: 0.5 * weighted mean of (y_pred - y_true)^2.

    Call args as for ``RegressiveCrossEntropy``; with 0/1 weights this equals SimpleBaseline's
    0.5 * MSE(w * pred, w * gt).
    """

    def __init__(self, name: str = "weighted_mse", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        return 0.5 * tf.square(y_pred - tf.cast(y_true, y_pred.dtype))


# The output activation each loss trains: RCE takes the logits of a sigmoid output, MSE
# regresses a linear output, sigmoid_mse regresses a sigmoid output's probabilities.
OUTPUT_ACTIVATIONS = {"rce": "sigmoid", "mse": "linear", "sigmoid_mse": "sigmoid"}


def check_loss_name(name: str) -> str:
    """Returns ``name`` if it is a known loss (a key of ``OUTPUT_ACTIVATIONS``), else raises a
    ValueError naming the known ones."""
    if name not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(OUTPUT_ACTIVATIONS)}")
    return name


def loss_for(name: str) -> keras.losses.Loss:
    """The loss called ``name``: "rce" is RCE from logits (train it on
    ``fptflite.models.heatmap_logits_model(model)`` of a sigmoid-output model), "mse" and
    "sigmoid_mse" the weighted MSE of the model's output (linear or sigmoid)."""
    if check_loss_name(name) == "rce":
        return RegressiveCrossEntropy(from_logits=True)
    return WeightedMSE()
