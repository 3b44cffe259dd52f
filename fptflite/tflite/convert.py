"""Keras -> TFLite conversion in four formats: float32, float16, int8_ptq and int8_qat.

The int8 formats are fully integer (``TFLITE_BUILTINS_INT8``): every compute op runs in int8,
with quantize/dequantize only at the edges when a float input or output is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf
import tf_keras as keras

from fptflite import quantization
from fptflite.quantization.model_io import load_model

FORMATS = ("float32", "float16", "int8_ptq", "int8_qat")
IO_TYPES = {"float32": tf.float32, "uint8": tf.uint8, "int8": tf.int8}


def representative_dataset(images: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A converter representative dataset over eval crops [N, H, W, 3] (float RGB 0..255)."""
    if len(images) == 0:
        raise ValueError("the calibration set is empty: int8 conversion needs eval crops")

    def gen():
        for img in images:
            yield [img[None].astype(np.float32)]

    return gen


def match_qat_biases_to_file(model: keras.Model) -> None:
    """Before converting a QAT model: widens weight ranges whose int32 bias would not fit
    (``quantization.fit_biases_to_int32``) and moves folded biases onto the file's int32 grid
    (``quantization.snap_biases_to_int32_grid``). Persistent (not undone): the Keras QAT model
    must keep computing what the file does."""
    quantization.fit_biases_to_int32(model)
    quantization.snap_biases_to_int32_grid(model)


def convert(
    model: keras.Model,
    fmt: str,
    calibration_images: np.ndarray | None = None,
    input_type: str = "uint8",
    output_type: str = "uint8",
    batch_size: int | None = None,
) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
        model: a float zoo model (float32, float16, int8_ptq) or a QAT model (int8_qat).
        fmt: one of ``FORMATS``.
        calibration_images: eval-preprocessed crops [N, H, W, 3] for int8 formats (PTQ
            calibrates on them; QAT keeps its trained ranges and the converter uses them only
            where a tensor has none). For int8_qat, weight ranges too narrow for an int32
            bias are first widened in ``model`` itself (``quantization.fit_biases_to_int32``).
        input_type / output_type: "uint8", "int8" or "float32" (int8 formats only).
        batch_size: None keeps the model's dynamic batch (shape signature [-1, H, W, 3]: the
            file takes batches); an int fixes it (``keras_converter``), for consumers that
            feed one image (the Android sample, LiteRT.js, GPU accelerators).

    Returns:
        The .tflite bytes.

    Raises:
        ValueError: unknown format or type, a float model for int8_qat, a QAT model for the
            float formats, or an empty calibration set.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    quantized = quantization.is_quantized(model)
    if fmt == "int8_qat" and not quantized:
        raise ValueError(f"int8_qat needs a QAT model, but {model.name} is a float model (no "
                         "fake-quant layers): run conversion.qat first")
    if fmt != "int8_qat" and quantized:
        raise ValueError(f"{fmt} needs the float model, but {model.name} is a QAT model")
    if fmt == "int8_qat":
        match_qat_biases_to_file(model)
        with distinct_uniform_biases(model):
            return _converter(model, fmt, calibration_images, input_type, output_type,
                              batch_size).convert()
    return _converter(model, fmt, calibration_images, input_type, output_type,
                      batch_size).convert()


def keras_converter(model: keras.Model, batch_size: int | None = None
                    ) -> tf.lite.TFLiteConverter:
    """The converter of a single-input Keras model, with a dynamic or a fixed batch.

    Args:
        model: a Keras model, input [N, H, W, C].
        batch_size: None: ``from_keras_model`` (shape signature [-1, H, W, C]). An int: the
            model traced at [batch_size, H, W, C] (``from_concrete_functions``): the
            signature is static, and ops that computed shapes from the batch (SHAPE /
            STRIDED_SLICE / PACK before a TRANSPOSE_CONV) fold into constants. Tensor names
            and the signature's input and output names are the same either way.
    """
    if batch_size is None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{model.name}: a fixed batch needs one input and one output")
    spec = tf.TensorSpec([batch_size, *model.inputs[0].shape[1:]], model.inputs[0].dtype,
                         name=model.input_names[0])
    name = model.output_names[0]
    fn = tf.function(lambda x: {name: model(x, training=False)})
    return tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function(spec)],
                                                           model)


def _converter(model: keras.Model, fmt: str, calibration_images: np.ndarray | None,
               input_type: str, output_type: str, batch_size: int | None = None
               ) -> tf.lite.TFLiteConverter:
    converter = keras_converter(model, batch_size)
    if fmt == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt.startswith("int8"):
        for name, t in (("input_type", input_type), ("output_type", output_type)):
            if t not in IO_TYPES:
                raise ValueError(f"{name} must be one of {sorted(IO_TYPES)}, got {t!r}")
        if calibration_images is None:
            raise ValueError(f"{fmt} needs calibration images (eval crops)")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = representative_dataset(calibration_images)
        converter.inference_input_type = IO_TYPES[input_type]
        converter.inference_output_type = IO_TYPES[output_type]
    return converter


# The converter (TF 2.21) quantizes a per-channel bias whose values are all equal (a splat
# constant, e.g. the FasterPose head's prior-logit bias before training moves it) with the
# first channel's scale for every channel: in an int8_qat file channel c's bias comes out
# multiplied by scale_0 / scale_c (measured: -1.0 became -0.615 ... -1.07, heatmap
# correlation with the Keras QAT model 0.996 instead of 0.9999). Spreading equal values by a
# few float32 ulps makes the constant non-splat; the model's outputs do not change visibly.
_BIAS_SPREAD_ULPS = 4


@contextlib.contextmanager
def distinct_uniform_biases(model: keras.Model) -> Iterator[list[str]]:
    """Temporarily spreads every all-equal bias vector of ``model`` by a few ulps."""
    changed: list[tuple[tf.Variable, np.ndarray]] = []
    for var in model.trainable_weights:
        if var.name.split("/")[-1].split(":")[0] != "bias" or var.shape.rank != 1 \
                or var.shape[0] < 2:
            continue
        value = var.numpy()
        if np.all(value == value[0]):
            steps = (np.arange(len(value)) % (2 * _BIAS_SPREAD_ULPS + 1)) - _BIAS_SPREAD_ULPS
            spread = value + steps * np.spacing(np.abs(value).astype(np.float32))
            changed.append((var, value))
            var.assign(spread.astype(value.dtype))
    try:
        yield [v.name for v, _ in changed]
    finally:
        for var, value in changed:
            var.assign(value)


def load_for_format(path: str, fmt: str) -> keras.Model:
    """Loads the Keras model a format converts from, checking that it is the right kind.

    int8_qat needs a QAT model (.h5 with fake-quant wrappers); every other format the float
    model.

    Raises:
        ValueError: naming ``path`` when it holds the other kind of model.
    """
    model = load_model(path)
    quantized = quantization.is_quantized(model)
    if fmt == "int8_qat" and not quantized:
        raise ValueError(f"{path} is a float model (no fake-quant layers) but int8_qat needs "
                         "the QAT model: run conversion.qat and give its best.h5")
    if fmt != "int8_qat" and quantized:
        raise ValueError(f"{path} is a QAT model (fake-quant wrappers) but {fmt} needs the "
                         "float model it was fine-tuned from")
    return model
