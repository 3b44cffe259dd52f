"""Quantization-aware training (tfmot) that simulates the int8 file the TFLite converter writes.

tfmot's default 8-bit scheme differs from what the converter does in three places that
matter for pose heatmaps; ``ConverterMatchedQuantizeScheme`` (tfmot's extension points: a
registry subclass, QuantizeConfigs and quantizers) closes them:

* **Depthwise kernels per channel.** The default registry builds the depthwise kernel's
  min/max from the kernel's last axis, the depth multiplier (shape (1,): per tensor,
  tensorflow/model-optimization#808), while the converter quantizes depthwise kernels per
  output channel. ``DepthwisePerChannelQuantizer`` fake-quantizes the (kh, kw, C, M) kernel
  per channel C*M, symmetric in [-127, 127] like the converter.
* **BN folding.** tfmot keeps Conv/DepthwiseConv -> BN -> ReLU unfolded (no fake-quant between
  them) and fake-quantizes the kernel before the fold; the converter folds BN into the kernel
  and quantizes afterwards. With symmetric per-channel weights both give the same int8 grid
  (folding scales each output channel by gamma / sigma, which scales that channel's range by
  the same factor), so per-channel depthwise kernels also make the BN handling agree.
* **The sigmoid's output.** TFLite's int8 LOGISTIC has a fixed output quantization: scale
  1/256, zero point -128, i.e. values k/256 for k = 0..255. tfmot puts no fake-quant after a
  sigmoid; here it gets a fixed one on [0, 255/256] (256 steps of 1/256).

* **The sigmoid's input.** Logits below logit(0.5/256) or above logit(254.5/256) give the
  same int8 LOGISTIC output as those limits, so a logit range wider than that only coarsens
  the int8 grid near the peaks (on the demo model the head conv's calibrated range
  [-20.9, 2.7] gave 0.093 logit steps, about 6 output steps each at p = 0.5).
  ``SigmoidLogitQuantizer`` clips the conv's output range to ``SIGMOID_LOGIT_RANGE`` (those
  limits plus a quarter of margin each), in training and in the file alike.
* **int32 biases.** A conv's bias is stored in int32 at scale input_scale * weight_scale;
  where a collapsed activation range makes that product tiny, the converter saturates the
  bias. ``fit_biases_to_int32`` widens such channels' weight ranges as TFLite's
  post-training quantizer does (before conversion too), so the simulation keeps the bias.

Activation ranges start from calibration statistics of the float model on eval crops (the
overall min/max the converter's calibrator also uses), not from tfmot's +-6, and weight
ranges from the weights themselves (``calibrate_ranges``). The model input's range is the
pixel range [0, 255].

The zoo's custom layers get QuantizeConfigs: ``DepthToSpace`` is a pure rearrangement (int8
DEPTH_TO_SPACE keeps its input's scale and zero point), so it adds no fake-quant;
``ImageNormalization`` ((x - mean) / std as a 1x1 depthwise conv) gets an 8-bit output
fake-quant and the int8 file's rounded bias (``ImageNormalizationQuantizeConfig``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from absl import logging

# Default8BitConvQuantizeConfig and Default8BitActivationQuantizeConfig are what the public
# Default8BitQuantizeRegistry hands out; subclassing them is the registry's extension point.
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as _registry,
)

from fptflite.models.batch_norm import batch_norm_layers, layers_with_initial_statistics
from fptflite.models.layers import DepthToSpace, ImageNormalization

_q = tfmot.quantization.keras

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
    inbound = _inbound_names(model)
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


def _annotate(layer: keras.layers.Layer, logit_convs: frozenset = frozenset()
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
        float_model, clone_function=lambda layer: _annotate(layer, logit_convs))
    annotated.set_weights(float_model.get_weights())
    with quantize_scope():
        qat = _q.quantize_apply(annotated, scheme=ConverterMatchedQuantizeScheme())
    verify_float_weights(float_model, qat)
    if calibration_images is not None:
        calibrate_ranges(qat, float_model, calibration_images, batch_size)
    return qat


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


def _range_vars(layer: keras.layers.Layer) -> dict[str, tuple[tf.Variable, tf.Variable]]:
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


def activation_ranges(float_model: keras.Model, layer_names: Sequence[str],
                      images: np.ndarray, batch_size: int = 32) -> dict[str, tuple[float, float]]:
    """Overall min/max of the named float layers' outputs over ``images`` [N, H, W, 3].

    The range always contains 0 (as TFLite requires). This is what the converter's
    calibrator records for a tensor.
    """
    if len(images) == 0:
        raise ValueError("the calibration set is empty: activation ranges need eval crops")
    names = list(dict.fromkeys(layer_names))
    probe = keras.Model(float_model.input, [float_model.get_layer(n).output for n in names])
    lo = np.full(len(names), np.inf)
    hi = np.full(len(names), -np.inf)
    for start in range(0, len(images), batch_size):
        outs = probe(images[start:start + batch_size], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, out in enumerate(outs):
            lo[i] = min(lo[i], float(tf.reduce_min(out)))
            hi[i] = max(hi[i], float(tf.reduce_max(out)))
    return {n: (min(float(a), 0.0), max(float(b), 0.0)) for n, a, b in
            zip(names, lo, hi, strict=True)}


def nudged_range(lo: float, hi: float, num_bits: int = 8) -> tuple[float, float]:
    """The range the converter will use for an asymmetric tensor range [lo, hi]: zero on the
    integer grid, its zero point rounded in double precision (half away from zero).

    TF's fake-quant op nudges the same range in float32; where the zero point is a tie
    (e.g. [-1, 1]: 127.5) the two can round it differently and the Keras model then clamps
    at one end what the int8 file clamps at the other. Giving both the already nudged range
    removes the tie.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    steps = 2 ** num_bits - 1
    if hi - lo < 1e-12:
        hi = lo + 1e-6
    scale = (hi - lo) / steps
    zero = min(max(math.floor(-lo / scale + 0.5), 0), steps)
    return -zero * scale, (steps - zero) * scale


def calibrate_ranges(qat: keras.Model, float_model: keras.Model, images: np.ndarray,
                     batch_size: int = 32) -> dict[str, int]:
    """Sets every fake-quant range of ``qat`` as the converter would choose it.

    Activation (output) ranges: overall min/max of the float model's same layer on
    ``images``; the input: the pixel range; weights: symmetric max |w| (per channel where the
    quantizer is per channel). Fixed quantizers (the sigmoid's output) have no variables.

    Returns:
        Counts of the ranges set: {"activations": n, "weights": n, "inputs": n,
        "bias_fitted_layers": n (weight ranges widened by ``fit_biases_to_int32``)}.

    Raises:
        ValueError: an empty calibration set, or a range variable whose layer has no float
            twin of the same name.
    """
    if len(images) == 0:
        raise ValueError("the calibration set is empty: QAT ranges start from eval crops")
    counts = {"activations": 0, "weights": 0, "inputs": 0}
    output_layers = []
    for layer in qat.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for lo_var, hi_var in _range_vars(layer).values():
                lo_var.assign(np.full(lo_var.shape, INPUT_PIXEL_RANGE[0], np.float32))
                hi_var.assign(np.full(hi_var.shape, INPUT_PIXEL_RANGE[1], np.float32))
                counts["inputs"] += 1
            continue
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        for role, (lo_var, hi_var) in _range_vars(layer).items():
            if role == "output":
                output_layers.append((inner.name, lo_var, hi_var))
                continue
            # The wrapper swapped the attribute for its fake-quant tensor; the variable stays.
            kernels = [w for w in layer.trainable_weights
                       if w.name.split("/")[-1].split(":")[0] == role]
            if len(kernels) != 1:
                raise ValueError(f"QAT layer {layer.name} has range variables for {role!r} "
                                 "but no single weight of that name")
            size = int(np.prod(lo_var.shape)) if lo_var.shape.rank else 1
            k = kernels[0].numpy()
            peak = np.abs(k.reshape(-1, size)).max(axis=0) if size > 1 else np.abs(k).max()
            lo_var.assign(np.reshape(-peak, lo_var.shape).astype(np.float32))
            hi_var.assign(np.reshape(peak, hi_var.shape).astype(np.float32))
            counts["weights"] += 1
    missing = [n for n, _, _ in output_layers if n not in {x.name for x in float_model.layers}]
    if missing:
        raise ValueError(f"the float model {float_model.name} lacks layers {missing[:5]} of "
                         "the QAT model: it is not the model that was quantized")
    ranges = activation_ranges(float_model, [n for n, _, _ in output_layers], images,
                               batch_size)
    for name, lo_var, hi_var in output_layers:
        lo, hi = nudged_range(*ranges[name])
        lo_var.assign(lo)
        hi_var.assign(hi)
        counts["activations"] += 1
    counts["bias_fitted_layers"] = len(fit_biases_to_int32(qat))
    logging.info("QAT ranges from %d calibration crops: %d activations, %d weights, %d inputs",
                 len(images), counts["activations"], counts["weights"], counts["inputs"])
    return counts


# TFLite stores a conv's bias in int32 with scale input_scale * weight_scale[c]. Its
# post-training quantizer keeps every bias within the middle half of int32 by widening that
# channel's weight scale (tensorflow/lite/tools/optimize/quantization_utils.cc,
# AdjustWeightsForBiasScale). An int8_qat file takes its weight scales from the QAT model's
# fake-quant ranges as they are, and the converter saturates a bias that does not fit
# (measured on a random-weight fasterpose_mnv2: its stride-32 features span [0, 1.7e-4], so
# the head's prior bias -4.8 needed -3.4e11 steps and became -2**31 steps = -0.04:
# heatmaps 0.49 in the file, 0.008 in Keras). ``fit_biases_to_int32`` applies TFLite's rule
# to the QAT weight ranges, so that the Keras QAT model computes what the file computes.
INT32_MAX = 2**31 - 1
BIAS_INT32_HEADROOM = 0.5


def _inbound_names(qat: keras.Model) -> dict[str, list[str]]:
    """Layer name -> names of the layers feeding it (the functional graph of ``qat``)."""
    return {cfg["name"]: [inbound[0] for node in cfg["inbound_nodes"] for inbound in node]
            for cfg in qat.get_config()["layers"]}


def _input_scale(qat: keras.Model, name: str, inbound: dict[str, list[str]]) -> float | None:
    """The int8 scale of the tensor feeding layer ``name``: the range of the nearest
    fake-quant upstream, through layers that pass their input's quantization on
    (padding, DEPTH_TO_SPACE). None where the input has no single quantized producer."""
    sources = inbound.get(name, [])
    while len(sources) == 1:
        producer = qat.get_layer(sources[0])
        ranges = _range_vars(producer)
        if type(producer).__name__ == "QuantizeLayer" and ranges:
            lo_var, hi_var = next(iter(ranges.values()))
        elif "output" in ranges:
            lo_var, hi_var = ranges["output"]
        else:
            sources = inbound.get(producer.name, [])
            continue
        return (float(hi_var.numpy()) - float(lo_var.numpy())) / 255.0
    return None


def _bn_fold(qat: keras.Model, name: str, inbound: dict[str, list[str]],
             channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, offset) per output channel that folding a BatchNormalization consuming
    layer ``name`` applies to the conv (w' = w * m, b' = b * m + offset); (1, 0) without BN."""
    consumers = [n for n, srcs in inbound.items() if name in srcs]
    if len(consumers) == 1:
        bn = getattr(qat.get_layer(consumers[0]), "layer", None)
        if isinstance(bn, keras.layers.BatchNormalization):
            gamma = bn.gamma.numpy() if bn.scale else np.ones(channels, np.float32)
            beta = bn.beta.numpy() if bn.center else np.zeros(channels, np.float32)
            mult = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            return mult, beta - bn.moving_mean.numpy() * mult
    return np.ones(channels, np.float32), np.zeros(channels, np.float32)


@dataclasses.dataclass
class _QuantizedConv:
    """A quantized Conv2D / DepthwiseConv2D / Dense of a QAT model, as the converter folds it."""
    wrapper: keras.layers.Layer  # tfmot's QuantizeWrapper
    inner: keras.layers.Layer  # the wrapped conv
    lo: tf.Variable  # the kernel's fake-quant range variables
    hi: tf.Variable
    input_scale: float
    mult: np.ndarray  # [C] BN scale folded into the kernel (ones without a BN)
    bias: np.ndarray  # [C] float64 folded bias (BN included)


def _quantized_convs(qat: keras.Model, inbound: dict[str, list[str]]):
    """Yields a ``_QuantizedConv`` per quantized conv whose kernel range and input scale
    are known."""
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if not isinstance(inner, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                  keras.layers.Dense)):
            continue
        ranges = _range_vars(layer)
        role = "depthwise_kernel" if "depthwise_kernel" in ranges else "kernel"
        in_scale = _input_scale(qat, layer.name, inbound)
        if role not in ranges or not in_scale:
            continue
        lo, hi = ranges[role]
        channels = int(inner.bias.shape[0]) if inner.use_bias else int(np.size(hi.numpy()))
        mult, offset = _bn_fold(qat, layer.name, inbound, channels)
        bias = (inner.bias.numpy() if inner.use_bias else 0.0) * mult + offset
        yield _QuantizedConv(layer, inner, lo, hi, in_scale, mult, bias.astype(np.float64))


def fit_biases_to_int32(qat: keras.Model) -> list[dict]:
    """Widens conv weight ranges wherever the int8 file's int32 bias would not fit.

    For each quantized Conv2D / DepthwiseConv2D / Dense, with its bias as the converter
    folds it (BatchNormalization included), channel c needs
    |b'[c]| <= BIAS_INT32_HEADROOM * INT32_MAX * input_scale * weight_scale'[c]; where it
    does not, that channel's fake-quant range grows to the smallest range that fits
    (TFLite's post-training rule). The weights of such a channel then round to few (often
    zero) steps in Keras and in the file alike: its output is the bias, which is what the
    float model computes there anyway (the bias is >= 2**30 steps of ``w * x``).

    Call it after the ranges are final (``calibrate_ranges`` and ``tflite.convert`` do): a
    QAT training step resets kernel ranges to the kernel's own min/max.

    Returns:
        One dict per widened layer: {"layer", "channels" (how many), "max_factor" (range
        growth), "input_scale"}; also logged as a warning.
    """
    widened = []
    for conv in _quantized_convs(qat, _inbound_names(qat)):
        inner, lo_var, hi_var, in_scale = conv.inner, conv.lo, conv.hi, conv.input_scale
        hi = np.abs(np.reshape(hi_var.numpy(), -1)).astype(np.float64)
        need = np.abs(conv.bias) / np.maximum(np.abs(conv.mult), 1e-30)
        if hi.size == 1:  # per-tensor weights: one range for every channel
            need = np.max(need)
        need = 127.0 * need / (BIAS_INT32_HEADROOM * INT32_MAX * in_scale)
        grow = need > hi
        if not np.any(grow):
            continue
        new_hi = np.where(grow, need, hi).astype(np.float32)
        hi_var.assign(np.reshape(new_hi, hi_var.shape))
        lo_var.assign(np.reshape(-new_hi, lo_var.shape))
        widened.append({"layer": inner.name, "channels": int(np.sum(grow)),
                        "max_factor": float(np.max(need[grow] / np.maximum(hi[grow], 1e-30))),
                        "input_scale": in_scale})
        logging.warning("QAT layer %s: %d channel(s) of weight range widened up to %.3g x "
                        "so that the int8 file's int32 bias fits (input scale %.3g: a "
                        "collapsed activation range upstream)", inner.name, int(np.sum(grow)),
                        widened[-1]["max_factor"], in_scale)
    return widened


def _conv_bias_grids(qat: keras.Model):
    """Yields (layer, bias_var_to_shift, folded_bias, int32 bias step) per quantized conv:
    the bias as the converter folds it (BatchNormalization included) and its grid
    input_scale * weight_scale'[c]. The variable to shift is the BN's beta where a BN folds
    into the conv, else the conv's own bias (None when the layer has neither)."""
    inbound = _inbound_names(qat)
    for conv in _quantized_convs(qat, inbound):
        layer, inner = conv.wrapper, conv.inner
        hi = np.abs(np.reshape(conv.hi.numpy(), -1)).astype(np.float64)
        consumers = [n for n, srcs in inbound.items() if layer.name in srcs]
        bn = getattr(qat.get_layer(consumers[0]), "layer", None) if len(consumers) == 1 else None
        target = bn.beta if isinstance(bn, keras.layers.BatchNormalization) and bn.center \
            else (inner.bias if inner.use_bias and not isinstance(
                bn, keras.layers.BatchNormalization) else None)
        yield inner, target, conv.bias, \
            conv.input_scale * (hi / 127.0) * np.abs(conv.mult).astype(np.float64)


def snap_biases_to_int32_grid(qat: keras.Model) -> int:
    """Moves every folded conv bias onto the int32 grid the file stores it on.

    The converter rounds a conv's (BN-folded) bias to multiples of input_scale *
    weight_scale'[c]; the Keras QAT model adds the exact float bias. The difference is at
    most half of that step, i.e. 0.5 * input_scale * weight_scale / output_scale of an output
    step (~1e-3 step), but it decides the rounding of values that close to a tie, and in a
    deep network these 1-step flips multiply from layer to layer (measured on the demo model:
    the first conv disagreed with XNNPACK on 0.023% of values, every one of them within
    1.1e-3 steps of a tie; 5% of heatmap pixels at the end). Shifting the BN beta (or the
    conv bias) by the rounding error makes the Keras model add the bias the file adds.

    Call it when the ranges are final (``tflite.convert`` does, after
    ``fit_biases_to_int32``): the grid depends on the input and weight ranges.

    Returns:
        The number of layers whose bias moved.
    """
    moved = 0
    for _, target, bias, step in _conv_bias_grids(qat):
        if target is None or not np.all(step > 0):
            continue
        delta = np.round(bias / step) * step - bias  # TFLite rounds half away from zero
        ties = np.abs(np.abs(bias / step) % 1 - 0.5) < 1e-9
        delta = np.where(ties, np.sign(bias) * np.ceil(np.abs(bias / step)) * step - bias,
                         delta)
        if np.any(delta):
            target.assign((target.numpy().astype(np.float64) + delta).astype(np.float32))
            moved += 1
    return moved


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
