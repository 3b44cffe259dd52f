"""Initial QAT ranges: activation ranges from the float model's statistics on eval crops
(the overall min/max the converter's calibrator uses), weight ranges from the weights."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite.quantization.biases import fit_biases_to_int32
from fptflite.quantization.scheme import INPUT_PIXEL_RANGE, range_vars


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
            for lo_var, hi_var in range_vars(layer).values():
                lo_var.assign(np.full(lo_var.shape, INPUT_PIXEL_RANGE[0], np.float32))
                hi_var.assign(np.full(hi_var.shape, INPUT_PIXEL_RANGE[1], np.float32))
                counts["inputs"] += 1
            continue
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        for role, (lo_var, hi_var) in range_vars(layer).items():
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
