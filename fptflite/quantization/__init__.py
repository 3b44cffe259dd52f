"""Quantization-aware training (tfmot) that simulates the int8 file the TFLite converter writes.

Modules: ``scheme`` (QuantizeConfigs, quantizers, the registry and scope), ``qat`` (wrapping a
float model: ``quantize``), ``calibration`` (initial ranges), ``biases`` (int32 biases),
``checks`` (weights carried over, BN statistics) and ``model_io`` (loading float and QAT
model files).

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

from fptflite.quantization.biases import fit_biases_to_int32, snap_biases_to_int32_grid
from fptflite.quantization.calibration import calibrate_ranges, nudged_range
from fptflite.quantization.checks import (
    logistic_output_is_fixed,
    verify_float_weights,
    warn_if_batch_norm_untrained,
)
from fptflite.quantization.qat import quantize
from fptflite.quantization.scheme import (
    INPUT_PIXEL_RANGE,
    LOGISTIC_OUTPUT_RANGE,
    LOGISTIC_OUTPUT_SCALE,
    SIGMOID_LOGIT_RANGE,
    is_quantized,
    quantize_scope,
)

__all__ = [
    "INPUT_PIXEL_RANGE",
    "LOGISTIC_OUTPUT_RANGE",
    "LOGISTIC_OUTPUT_SCALE",
    "SIGMOID_LOGIT_RANGE",
    "calibrate_ranges",
    "fit_biases_to_int32",
    "is_quantized",
    "logistic_output_is_fixed",
    "nudged_range",
    "quantize",
    "quantize_scope",
    "snap_biases_to_int32_grid",
    "verify_float_weights",
    "warn_if_batch_norm_untrained",
]
