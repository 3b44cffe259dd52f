"""Building the Android drop-in file: an int8 body with in-graph keypoint decoding.

The body (backbone + head + sigmoid) runs in int8; ``HeatmapPeakDecode`` runs in float after
the heatmap DEQUANTIZE (from a QAT body the converter keeps the row-maximum MAX_POOL_2D ops in
int8 and dequantizes their result, which is exact). QAT: the decode layer is appended to the QAT
model without quantize annotations, so it has no fake-quant ranges and the converter (given
no representative data) keeps it float. PTQ: the converter would calibrate and quantize
every op, so the decode's tensors are removed from quantization with
``tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=...)``, and the uint8
input / float32 output interface is then set by editing the flatbuffer
(``fptflite.serving.tflite_interface``).

Whether a built file keeps the contract is checked by ``fptflite.serving.dropin_check``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from fptflite import quantization
from fptflite.keypoints import COCO_KEYPOINT_NAMES
from fptflite.serving import tflite_interface
from fptflite.serving.decode_layer import HeatmapPeakDecode
from fptflite.tflite import convert as convert_lib
from fptflite.tflite.litert import load_interpreter

DECODE_LAYER_NAME = "keypoint_decode"
INT8_MODES = ("qat", "ptq")
# The app feeds one crop: the file's batch is fixed to 1 in its shape signature (LiteRT.js and
# GPU accelerators refuse a dynamic [-1, S, S, 3] input).
DROPIN_BATCH = 1


def build_dropin_model(body: keras.Model) -> keras.Model:
    """Body [N, S, S, 3] -> heatmaps [N, S/4, S/4, K] becomes [N, S, S, 3] -> [N, 1, K, 3].

    Raises:
        ValueError: the body's input is not square RGB or its output is not heatmaps.
    """
    in_shape = tuple(body.input_shape)
    out_shape = tuple(body.output_shape)
    if len(in_shape) != 4 or in_shape[1] != in_shape[2] or in_shape[3] != 3:
        raise ValueError(f"{body.name}: the Android drop-in needs a square RGB input "
                         f"[N, S, S, 3], got {in_shape} (train a config with a square "
                         "input_size, e.g. 192x192)")
    if len(out_shape) != 4 or out_shape[3] != len(COCO_KEYPOINT_NAMES):
        raise ValueError(f"{body.name}: expected heatmaps [N, H, W, 17], got {out_shape}")
    keypoints = HeatmapPeakDecode(name=DECODE_LAYER_NAME)(body.outputs[0])
    return keras.Model(body.inputs, keypoints, name=f"{body.name}_singlepose")


def convert_dropin(body: keras.Model, int8: str,
                   calibration_images: np.ndarray | None = None) -> bytes:
    """Converts body + in-graph decode to a uint8-in, float32-out .tflite.

    Args:
        body: a QAT model (int8="qat") or the float model (int8="ptq").
        int8: "qat" or "ptq".
        calibration_images: eval crops [N, S, S, 3] float 0..255 (PTQ only).

    Returns:
        The .tflite bytes: uint8 [1, S, S, 3] -> float32 [1, 1, K, 3], batch 1 also in the
        shape signature.

    Raises:
        ValueError: an unknown ``int8``, a body that does not match it, or no calibration
            images.
    """
    if int8 not in INT8_MODES:
        raise ValueError(f"int8 must be one of {INT8_MODES}, got {int8!r}")
    quantized = quantization.is_quantized(body)
    if int8 == "qat" and not quantized:
        raise ValueError(f"int8=qat needs a QAT model, but {body.name} has no fake-quant layers")
    if int8 == "ptq" and quantized:
        raise ValueError(f"int8=ptq needs the float model, but {body.name} is a QAT model")
    if calibration_images is None:
        raise ValueError("the drop-in conversion needs calibration images (eval crops)")
    if quantized:
        convert_lib.match_qat_biases_to_file(body)  # as convert() does for int8_qat files
        return _convert_qat(build_dropin_model(body))
    return _convert_selective(build_dropin_model(body), calibration_images)


def _convert_qat(model: keras.Model) -> bytes:
    """A QAT body's trained ranges make it int8; the un-annotated decode has no ranges, so the
    converter (given no representative data) keeps it float. uint8 input, float32 output.
    (The QuantizationDebugger of the PTQ path does not accept QAT models.)"""
    with convert_lib.distinct_uniform_biases(model):
        converter = convert_lib.keras_converter(model, DROPIN_BATCH)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.uint8
        return converter.convert()


def _decode_tensor_names(model: keras.Model) -> list[str]:
    """Output tensor names of the decode's ops in the float .tflite of ``model``."""
    converter = convert_lib.keras_converter(model, DROPIN_BATCH)
    interp = load_interpreter(model_content=converter.convert(), delegates=False)
    names = [t["name"] for t in interp.get_tensor_details()
             if t["name"].split(";")[0].startswith(DECODE_LAYER_NAME + "/")
             or f"/{DECODE_LAYER_NAME}/" in t["name"]]
    names.append(interp.get_output_details()[0]["name"])
    return sorted(set(names))


def _convert_selective(model: keras.Model, calibration_images: np.ndarray) -> bytes:
    """int8 everywhere except the decode layer's tensors; uint8 input, float32 output."""
    dataset = convert_lib.representative_dataset(calibration_images)
    converter = convert_lib.keras_converter(model, DROPIN_BATCH)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.representative_dataset = dataset
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=_decode_tensor_names(model), fully_quantize=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset, debug_options=options)
    return tflite_interface.uint8_input_float_output(debugger.get_nondebug_quantized_model())
