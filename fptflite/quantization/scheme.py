"""tfmot's 8-bit scheme matched to the TFLite converter: QuantizeConfigs, quantizers,
the registry and the scope QAT models deserialize in (see the package docstring)."""

from __future__ import annotations

import contextlib
import math

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

# Default8BitConvQuantizeConfig and Default8BitActivationQuantizeConfig are what the public
# Default8BitQuantizeRegistry hands out; subclassing them is the registry's extension point.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _registry,
)

from fptflite.models.layers import DepthToSpace, ImageNormalization

_q = tfmot.quantization.keras  # tfmot's public Keras quantization API

# TFLite's int8 LOGISTIC output: scale 1/256, zero point -128 -> values k/256, k = 0..255.
LOGISTIC_OUTPUT_SCALE = 1.0 / 256.0
LOGISTIC_OUTPUT_RANGE = (0.0, 255.0 / 256.0)
# The model input is RGB pixels; its int8 tensor covers them exactly (scale 1).
INPUT_PIXEL_RANGE = (0.0, 255.0)
# Logits outside this range reach the same LOGISTIC output as its ends: below
# logit(0.5 / 256) the output rounds to 0, above logit(254.5 / 256) to 255/256 (the last
# step). 0.25 of margin keeps the fake-quant's nudged ends outside the rounding thresholds.
SIGMOID_LOGIT_RANGE = (
    -math.log((1.0 - 0.5 * LOGISTIC_OUTPUT_SCALE) / (0.5 * LOGISTIC_OUTPUT_SCALE)) - 0.25,
    math.log((1.0 - 1.5 * LOGISTIC_OUTPUT_SCALE) / (1.5 * LOGISTIC_OUTPUT_SCALE)) + 0.25,
)


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


@keras.utils.register_keras_serializable(package="fptflite")
class DepthwisePerChannelQuantizer(_q.quantizers.LastValueQuantizer):
    """Symmetric 8-bit per-channel fake-quant of a depthwise kernel (kh, kw, C, M).

    TFLite quantizes a depthwise kernel per output channel c * M + m; tfmot's per-axis
    quantizers use the last axis. The kernel is viewed as (kh, kw, 1, C * M) (same element
    order), fake-quantized per last axis, and viewed back.
    """

    def __init__(self, num_bits: int = 8, per_axis: bool = True, symmetric: bool = True,
                 narrow_range: bool = True):
        if not (num_bits == 8 and per_axis and symmetric and narrow_range):
            raise ValueError("DepthwisePerChannelQuantizer is 8-bit symmetric narrow-range per "
                             "channel (TFLite's int8 depthwise kernels)")
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {
            "min_var": layer.add_weight(name + "_min", shape=(channels,), trainable=False,
                                        initializer=keras.initializers.Constant(-6.0)),
            "max_var": layer.add_weight(name + "_max", shape=(channels,), trainable=False,
                                        initializer=keras.initializers.Constant(6.0)),
        }

    def __call__(self, inputs, training, weights, **kwargs):
        kh, kw, c, m = inputs.shape
        flat = tf.reshape(inputs, (kh, kw, 1, c * m))
        out = super().__call__(flat, training, weights, **kwargs)
        return tf.reshape(out, (kh, kw, c, m))


@keras.utils.register_keras_serializable(package="fptflite")
class DepthwiseConvQuantizeConfig(_registry.Default8BitConvQuantizeConfig):
    """tfmot's DepthwiseConv2D config with per-channel kernels (see the module docstring)."""

    def __init__(self, weight_attrs=("depthwise_kernel",), activation_attrs=("activation",),
                 quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.weight_quantizer = DepthwisePerChannelQuantizer()


@keras.utils.register_keras_serializable(package="fptflite")
class SigmoidLogitQuantizer(_q.quantizers.MovingAverageQuantizer):
    """8-bit per-tensor fake-quant of the logits a sigmoid takes, its range clipped to
    ``SIGMOID_LOGIT_RANGE``.

    The range variables keep tfmot's moving average of the observed range (training) or the
    calibrated one; the fake-quant (and hence the converter, which folds the clip into the
    constant range of the FakeQuant op) uses their intersection with ``SIGMOID_LOGIT_RANGE``.
    Clipped logits lose nothing: the int8 LOGISTIC maps every logit beyond a limit to the
    limit's output.
    """

    def __init__(self, num_bits: int = 8, per_axis: bool = False, symmetric: bool = False,
                 narrow_range: bool = False):
        if num_bits != 8 or per_axis or symmetric or narrow_range:
            raise ValueError("SigmoidLogitQuantizer is 8-bit asymmetric per tensor (TFLite's "
                             "int8 activations)")
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)

    def __call__(self, inputs, training, weights, **kwargs):
        if training:  # moves the range variables by tfmot's moving average; output unused
            super().__call__(inputs, training, weights, **kwargs)
        lo = tf.maximum(weights["min_var"], SIGMOID_LOGIT_RANGE[0])
        hi = tf.minimum(weights["max_var"], SIGMOID_LOGIT_RANGE[1])
        return tf.quantization.fake_quant_with_min_max_vars(inputs, lo, hi, num_bits=8,
                                                            narrow_range=False)


@keras.utils.register_keras_serializable(package="fptflite")
class SigmoidLogitConvQuantizeConfig(_registry.Default8BitConvQuantizeConfig):
    """tfmot's Conv2D config for the conv whose output a sigmoid takes (through pass-through
    layers such as DepthToSpace): its output fake-quant is ``SigmoidLogitQuantizer``."""

    def __init__(self, weight_attrs=("kernel",), activation_attrs=("activation",),
                 quantize_output=False):
        super().__init__(list(weight_attrs), list(activation_attrs), quantize_output)
        self.activation_quantizer = SigmoidLogitQuantizer()


@keras.utils.register_keras_serializable(package="fptflite")
class LogisticQuantizeConfig(_registry.Default8BitActivationQuantizeConfig):
    """tfmot's Activation config, plus TFLite's fixed 1/256-step output after a sigmoid."""

    def get_output_quantizers(self, layer):
        if getattr(layer.activation, "__name__", None) == "sigmoid" and self.quantize_output:
            return [_q.quantizers.FixedQuantizer(num_bits=8, init_min=LOGISTIC_OUTPUT_RANGE[0],
                                                 init_max=LOGISTIC_OUTPUT_RANGE[1],
                                                 narrow_range=False)]
        return super().get_output_quantizers(layer)


class ConverterMatchedQuantizeRegistry(_q.default_8bit.Default8BitQuantizeRegistry):
    """tfmot's 8-bit registry with per-channel depthwise kernels and the sigmoid's output."""

    def __init__(self):
        super().__init__(disable_per_axis=False)
        self._layer_quantize_map[keras.layers.DepthwiseConv2D] = DepthwiseConvQuantizeConfig()
        self._layer_quantize_map[keras.layers.Activation] = LogisticQuantizeConfig()


class ConverterMatchedQuantizeScheme(_q.default_8bit.Default8BitQuantizeScheme):
    """tfmot's 8-bit scheme (same layout transforms) with ``ConverterMatchedQuantizeRegistry``."""

    def get_quantize_registry(self):
        return ConverterMatchedQuantizeRegistry()


@keras.utils.register_keras_serializable(package="fptflite")
class ImageNormalizationQuantizeConfig(OutputQuantizeConfig):
    """Output fake-quant, plus the int8 file's bias: the converter turns the layer into one
    DEPTHWISE_CONV_2D (input scale 1 over the pixel range, weights 1/std = 127 steps per
    channel, exact) whose int32 bias has step 1 x (1/std)/127. Its offsets -mean/std are
    rounded to that grid in QAT as in the file. (For MobileNet's x/127.5 - 1 every output is a
    rounding tie, so the bias's last step decides the rounding of every pixel.)"""

    def set_quantize_weights(self, layer, quantize_weights):
        step = (INPUT_PIXEL_RANGE[1] - INPUT_PIXEL_RANGE[0]) / 255.0
        layer.int8_bias_steps = [step / s / 127.0 for s in layer.std]


CUSTOM_QUANTIZE_CONFIGS = {
    DepthToSpace: PassThroughQuantizeConfig,
    ImageNormalization: ImageNormalizationQuantizeConfig,
}

_SCOPE_OBJECTS = {
    "DepthToSpace": DepthToSpace,
    "ImageNormalization": ImageNormalization,
    "PassThroughQuantizeConfig": PassThroughQuantizeConfig,
    "OutputQuantizeConfig": OutputQuantizeConfig,
    "ImageNormalizationQuantizeConfig": ImageNormalizationQuantizeConfig,
    "DepthwisePerChannelQuantizer": DepthwisePerChannelQuantizer,
    "DepthwiseConvQuantizeConfig": DepthwiseConvQuantizeConfig,
    "LogisticQuantizeConfig": LogisticQuantizeConfig,
    "SigmoidLogitQuantizer": SigmoidLogitQuantizer,
    "SigmoidLogitConvQuantizeConfig": SigmoidLogitConvQuantizeConfig,
}


def quantize_scope() -> contextlib.AbstractContextManager:
    """Scope in which QAT models (``.h5`` files with QuantizeWrappers) deserialize."""
    return _q.quantize_scope(dict(_SCOPE_OBJECTS))


def is_quantized(model: keras.Model) -> bool:
    """True if ``model`` carries tfmot fake-quant wrappers (a QAT model)."""
    return any(isinstance(layer, (_q.QuantizeWrapper, _q.QuantizeWrapperV2))
               or type(layer).__name__ == "QuantizeLayer" for layer in model.layers)


def sigmoid_logit_convs(model: keras.Model) -> set[str]:
    """Names of the Conv2D layers (linear activation) whose output a sigmoid ``Activation``
    takes, directly or through pass-through layers (``DepthToSpace``)."""
    inbound = inbound_names(model)
    found = set()
    for layer in model.layers:
        if not (isinstance(layer, keras.layers.Activation)
                and layer.activation is keras.activations.sigmoid):
            continue
        sources = inbound.get(layer.name, [])
        while len(sources) == 1 and isinstance(model.get_layer(sources[0]), DepthToSpace):
            sources = inbound.get(sources[0], [])
        if len(sources) != 1:
            continue
        producer = model.get_layer(sources[0])
        if type(producer) is keras.layers.Conv2D \
                and producer.activation is keras.activations.linear:
            found.add(producer.name)
    return found


def annotate(layer: keras.layers.Layer, logit_convs: frozenset = frozenset()
              ) -> keras.layers.Layer:
    if layer.name in logit_convs:
        return _q.quantize_annotate_layer(layer, SigmoidLogitConvQuantizeConfig())
    for cls, config in CUSTOM_QUANTIZE_CONFIGS.items():
        if isinstance(layer, cls):
            return _q.quantize_annotate_layer(layer, config())
    if isinstance(layer, keras.layers.InputLayer):
        return layer
    # No custom config here: tfmot's Conv-BN-ReLU transforms skip layers that carry one.
    return _q.quantize_annotate_layer(layer)



def inbound_names(qat: keras.Model) -> dict[str, list[str]]:
    """Layer name -> names of the layers feeding it (the functional graph of ``qat``)."""
    return {cfg["name"]: [inbound[0] for node in cfg["inbound_nodes"] for inbound in node]
            for cfg in qat.get_config()["layers"]}


def range_vars(layer: keras.layers.Layer) -> dict[str, tuple[tf.Variable, tf.Variable]]:
    """Quantizer range variables of one QAT layer by role: "output" (output or
    post-activation fake-quant, on the wrapped layer's output), or the weight attribute
    name ("kernel", "depthwise_kernel")."""
    found: dict[str, dict[str, tf.Variable]] = {}
    for var in layer.non_trainable_weights:
        base = var.name.split("/")[-1].split(":")[0]
        for suffix in ("_min", "_max"):
            if base.endswith(suffix):
                role = base[: -len(suffix)]
                role = "output" if role in ("output", "post_activation", layer.name) else role
                found.setdefault(role, {})[suffix] = var
    return {role: (v["_min"], v["_max"]) for role, v in found.items()
            if "_min" in v and "_max" in v}
