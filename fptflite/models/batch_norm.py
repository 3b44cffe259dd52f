"""BatchNormalization statistics: finding a model's BN layers, telling whether their moving
statistics were ever updated, and settling them on data.

A freshly built model's BN layers hold their initial moving statistics (mean 0, variance 1).
In inference mode they then barely rescale anything, and a random-weight MobileNetV2's
activations vanish through its depth: measured on a random fasterpose_mnv2 (128x128), the
head's input was ~1e-8 (std), every heatmap the same constant 0.0082, and QAT ranges
calibrated on it collapsed to a scale of 5e-10. Settling the statistics on a few batches
of crops (training-mode forward passes, no weight update) gives the activations of a
random network with normalised layers (head input std 0.34 on the same model).
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of ``model``, including those inside tfmot's QAT
    wrappers and nested models, each once, in ``model.submodules`` order."""
    seen, layers = set(), []
    for module in model.submodules:
        if isinstance(module, keras.layers.BatchNormalization) and id(module) not in seen:
            seen.add(id(module))
            layers.append(module)
    return layers


def layers_with_initial_statistics(model: keras.Model) -> list[str]:
    """Names of the BN layers whose moving mean is all 0 and moving variance all 1: their
    statistics were never updated by a training step (an untrained model)."""
    return [bn.name for bn in batch_norm_layers(model)
            if not np.any(bn.moving_mean.numpy()) and np.all(bn.moving_variance.numpy() == 1.0)]


def settle_batch_norm(model: keras.Model, crops: np.ndarray, batch_size: int = 32) -> int:
    """Sets every BN layer's moving statistics to the mean of its batch statistics over
    ``crops``, by training-mode forward passes (weights are not touched).

    Each pass i (0-based) runs with momentum i / (i + 1), so after the last pass the moving
    mean and variance are the plain averages of the passes' batch statistics, whatever the
    layers' own momentum (restored afterwards).

    Args:
        model: a Keras model (float or QAT).
        crops: preprocessed crops [N, H, W, 3], N >= 1.
        batch_size: crops per pass.

    Returns:
        The number of forward passes.

    Raises:
        ValueError: no crops, or a model without BatchNormalization layers.
    """
    if len(crops) == 0:
        raise ValueError("settling BN statistics needs at least one crop")
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"model {model.name} has no BatchNormalization layer to settle")
    momenta = [bn.momentum for bn in layers]
    starts = range(0, len(crops), batch_size)
    try:
        for i, start in enumerate(starts):
            for bn in layers:
                bn.momentum = i / (i + 1)
            model(crops[start:start + batch_size], training=True)
    finally:
        for bn, momentum in zip(layers, momenta, strict=True):
            bn.momentum = momentum
    return len(starts)
