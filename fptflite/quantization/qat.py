"""Wrapping a float zoo model for quantization-aware training."""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from fptflite.quantization.calibration import calibrate_ranges
from fptflite.quantization.checks import verify_float_weights, warn_if_batch_norm_untrained
from fptflite.quantization.scheme import (
    ConverterMatchedQuantizeScheme,
    annotate,
    is_quantized,
    quantize_scope,
    sigmoid_logit_convs,
)


def quantize(float_model: keras.Model, calibration_images: np.ndarray | None = None,
             batch_size: int = 32) -> keras.Model:
    """Wraps a float zoo model for QAT the way the converter will quantize it.

    Args:
        float_model: a trained float model (ends in the heatmap sigmoid for FasterPose).
        calibration_images: eval-preprocessed crops [N, H, W, 3] (float RGB 0..255) whose
            float activations give the initial ranges (``calibrate_ranges``). None leaves
            tfmot's +-6 initial ranges (only for models whose checkpoint is restored next).
        batch_size: crops per forward pass during calibration.

    Returns:
        The QAT model (tfmot wrappers; same float weights).

    Raises:
        ValueError: the model is already quantized, the calibration set is empty, or a float
            weight did not reach the QAT model unchanged.
    """
    if is_quantized(float_model):
        raise ValueError(f"model {float_model.name} is already quantized (a QAT model): give "
                         "the float model it was trained from")
    if calibration_images is not None and len(calibration_images) == 0:
        raise ValueError("the calibration set is empty: QAT ranges start from eval crops")
    warn_if_batch_norm_untrained(float_model)
    logit_convs = frozenset(sigmoid_logit_convs(float_model))
    annotated = keras.models.clone_model(
        float_model, clone_function=lambda layer: annotate(layer, logit_convs))
    annotated.set_weights(float_model.get_weights())
    with quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(
            annotated, scheme=ConverterMatchedQuantizeScheme())
    verify_float_weights(float_model, qat)
    if calibration_images is not None:
        calibrate_ranges(qat, float_model, calibration_images, batch_size)
    return qat

