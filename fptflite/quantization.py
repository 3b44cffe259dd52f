"""Quantization-aware training with tensorflow-model-optimization (tfmot).

The zoo's two custom layers get QuantizeConfigs so that tfmot can clone them and the int8
converter sees what TFLite needs:

* ``DepthToSpace`` is a pure rearrangement of values: it has no weights and must keep its
  input's scale and zero point (TFLite's int8 DEPTH_TO_SPACE requires equal input and output
  quantization), so it adds no fake-quant of its own.
* ``ImageNormalization`` (x * scale + offset) has no trainable weights; its output gets an
  8-bit moving-average fake-quant like any activation.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from fptflite.models.layers import DepthToSpace, ImageNormalization

_q = tfmot.quantization.keras


@keras.utils.register_keras_serializable(package="fptflite")
class PassThroughQuantizeConfig(_q.QuantizeConfig):
    """No weights, no activations, no output quantizer: the output shares the input's
    quantization parameters (for value-preserving ops such as DEPTH_TO_SPACE)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


@keras.utils.register_keras_serializable(package="fptflite")
class OutputQuantizeConfig(PassThroughQuantizeConfig):
    """Only the output is fake-quantized (8 bit, asymmetric, per tensor)."""

    def get_output_quantizers(self, layer):
        return [_q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False,
                                                     symmetric=False, narrow_range=False)]


CUSTOM_QUANTIZE_CONFIGS = {
    DepthToSpace: PassThroughQuantizeConfig,
    ImageNormalization: OutputQuantizeConfig,
}


def quantize_scope() -> contextlib.AbstractContextManager:
    """Scope in which QAT models (``.keras`` files with QuantizeWrappers) deserialize."""
    return _q.quantize_scope({
        "DepthToSpace": DepthToSpace,
        "ImageNormalization": ImageNormalization,
        "PassThroughQuantizeConfig": PassThroughQuantizeConfig,
        "OutputQuantizeConfig": OutputQuantizeConfig,
    })


def is_quantized(model: keras.Model) -> bool:
    """True if ``model`` carries tfmot fake-quant wrappers (a QAT model)."""
    return any(isinstance(layer, (_q.QuantizeWrapper, _q.QuantizeWrapperV2))
               or type(layer).__name__ == "QuantizeLayer" for layer in model.layers)


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    for cls, config in CUSTOM_QUANTIZE_CONFIGS.items():
        if isinstance(layer, cls):
            return _q.quantize_annotate_layer(layer, config())
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    return _q.quantize_annotate_layer(layer)


def quantize(float_model: keras.Model) -> keras.Model:
    """Wraps a float zoo model for QAT and checks that every float weight was carried over.

    Raises:
        ValueError: the model is already quantized, or a float weight did not reach the QAT
            model unchanged.
    """
    if is_quantized(float_model):
        raise ValueError(f"model {float_model.name} is already quantized")
    annotated = keras.models.clone_model(float_model, clone_function=_annotate)
    annotated.set_weights(float_model.get_weights())
    with quantize_scope():
        qat = _q.quantize_apply(annotated)
    verify_float_weights(float_model, qat)
    return qat


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
