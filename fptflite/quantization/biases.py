"""int32 biases: QAT weight ranges widened and biases snapped so the Keras QAT model computes
the int32 biases the converter writes."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite.quantization.scheme import inbound_names, range_vars

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



def _input_scale(qat: keras.Model, name: str, inbound: dict[str, list[str]]) -> float | None:
    """The int8 scale of the tensor feeding layer ``name``: the range of the nearest
    fake-quant upstream, through layers that pass their input's quantization on
    (padding, DEPTH_TO_SPACE). None where the input has no single quantized producer."""
    sources = inbound.get(name, [])
    while len(sources) == 1:
        producer = qat.get_layer(sources[0])
        ranges = range_vars(producer)
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
        ranges = range_vars(layer)
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
    for conv in _quantized_convs(qat, inbound_names(qat)):
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
    inbound = inbound_names(qat)
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

