"""Loading trained models: float ``.keras`` files and QAT ``.h5`` files.

tfmot's QuantizeLayer does not round-trip through the ``.keras`` format, so QAT models are
saved as legacy H5 and loaded inside ``scheme.quantize_scope()``.
"""

from __future__ import annotations

import os

import tf_keras as keras

from fptflite.quantization.scheme import quantize_scope


def load_model(path: str) -> keras.Model:
    """Loads a float (.keras) or QAT (.h5) model file with a clear error if it is unusable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        if path.endswith(".h5"):
            with quantize_scope():
                return keras.models.load_model(path, compile=False)
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"cannot load a Keras model from {path}: {e}") from e
