"""Checks on a QAT model: float weights carried over, the fixed LOGISTIC output, BN statistics
of the float model it starts from."""

from __future__ import annotations

import math

import numpy as np
import tf_keras as keras
from absl import logging

from fptflite.models.batch_norm import batch_norm_layers, layers_with_initial_statistics
from fptflite.quantization.scheme import LOGISTIC_OUTPUT_RANGE, LogisticQuantizeConfig


def warn_if_batch_norm_untrained(float_model: keras.Model) -> list[str]:
    """Logs a loud warning when BN layers of ``float_model`` still hold their initial
    statistics (mean 0, variance 1): an untrained model whose activations can vanish through
    the network (``fptflite.models.batch_norm``), so that calibrated ranges collapse and
    every heatmap is the same constant. Returns those layers' names."""
    untrained = layers_with_initial_statistics(float_model)
    if untrained:
        logging.warning(
            "QAT of %s: %d of %d BatchNormalization layers (first: %s) still have their "
            "initial statistics (mean 0, variance 1): the model was never trained, its "
            "activations can vanish with depth and the calibrated ranges collapse. Start from "
            "a trained model, or settle the statistics on crops first "
            "(fptflite.models.batch_norm.settle_batch_norm)", float_model.name,
            len(untrained), len(batch_norm_layers(float_model)), untrained[0])
    return untrained



def verify_float_weights(float_model: keras.Model, qat: keras.Model) -> int:
    """Checks that each float layer weight appears unchanged in the QAT model.

    Returns:
        The number of weights checked.

    Raises:
        ValueError: naming the first weight that is missing or different.
    """
    # tfmot's wrappers own the original variables under their original names.
    qat_weights = {w.name: w for w in qat.weights}
    checked = 0
    for w in float_model.weights:
        if w.name not in qat_weights:
            raise ValueError(f"QAT model lacks float weight {w.name}")
        if not np.array_equal(qat_weights[w.name].numpy(), w.numpy()):
            raise ValueError(f"QAT weight {w.name} differs from the float model's: the float "
                             "weights were not loaded")
        checked += 1
    if not checked:
        raise ValueError("the float model has no weights to carry over")
    return checked


def logistic_output_is_fixed(qat: keras.Model) -> bool:
    """True if the QAT model's output sigmoid carries TFLite's fixed 1/256 fake-quant."""
    last = qat.layers[-1]
    cfg = getattr(last, "quantize_config", None)
    if not isinstance(cfg, LogisticQuantizeConfig):
        return False
    quantizers = cfg.get_output_quantizers(last.layer)
    return bool(quantizers) and math.isclose(quantizers[0].init_max, LOGISTIC_OUTPUT_RANGE[1])
