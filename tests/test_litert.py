"""fptflite.tflite.litert: the op list read from the flatbuffer (against the interpreter's own
node list), interpreter errors, dequantization, tensor names -> Keras layers, no TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from fptflite.models.layers import DepthToSpace
from fptflite.tflite import litert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INT8_OPS = ["QUANTIZE", "CONV_2D", "DEPTH_TO_SPACE", "CONV_2D", "LOGISTIC", "DEQUANTIZE"]


@pytest.fixture(scope="module")
def files():
    """A tiny conv -> DEPTH_TO_SPACE -> conv -> sigmoid model as float and int8 .tflite bytes
    (int8 compute with float input and output: QUANTIZE and DEQUANTIZE at the edges)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    x = DepthToSpace(2, name="d2s")(x)
    x = keras.layers.Conv2D(4, 1, activation="sigmoid", name="head")(x)
    model = keras.Model(inp, x)
    images = np.random.default_rng(0).uniform(0, 255, (4, 1, 8, 8, 3)).astype(np.float32)
    float_data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x] for x in images)
    return {"float32": float_data, "int8": converter.convert(), "images": images}


def test_list_ops_equals_the_interpreters_nodes(files, tmp_path):
    for fmt in ("float32", "int8"):
        path = str(tmp_path / f"{fmt}.tflite")
        with open(path, "wb") as f:
            f.write(files[fmt])
        ops = litert.list_ops(path)
        assert ops == litert.list_ops(model_content=files[fmt])
        interp = litert.load_interpreter(path, delegates=False)
        reference = [(op["op_name"], tuple(int(i) for i in op["inputs"]),
                      tuple(int(i) for i in op["outputs"]))
                     for op in interp._get_ops_details()]  # the reference, in this test only
        assert [(op.name, op.inputs, op.outputs) for op in ops] == reference
    assert [op.name for op in litert.list_ops(model_content=files["int8"])] == INT8_OPS
    assert [op.name for op in litert.list_ops(model_content=files["float32"])] == \
        ["CONV_2D", "DEPTH_TO_SPACE", "CONV_2D", "LOGISTIC"]


def test_layer_outputs_and_dequantize(files):
    interp = litert.load_interpreter(model_content=files["int8"], delegates=False,
                                     preserve_all_tensors=True)
    interp.set_tensor(interp.get_input_details()[0]["index"], files["images"][0])
    interp.invoke()
    found = litert.quantized_layer_outputs(interp, {"conv": [1, 8, 8, 8], "head": [1, 9, 9, 4],
                                                    "missing": [1]})
    assert set(found) == {"conv"}
    index, scale, zero = found["conv"]
    ops = litert.list_ops(model_content=files["int8"])
    assert index == ops[1].outputs[0] and scale > 0  # the first CONV_2D's output
    raw = interp.get_tensor(index)
    assert raw.dtype == np.int8
    value = litert.read_dequantized(interp, index)
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, (raw.astype(np.float32) - zero) * np.float32(scale))
    assert value.min() >= 0  # a ReLU output


def test_dequantize_and_layer_names():
    q = np.array([-128, 0, 127], np.int8)
    np.testing.assert_array_equal(litert.dequantize(q, 0.5, -3), [-62.5, 1.5, 65.0])
    assert litert.dequantize(q, 0.5, -3).dtype == np.float32
    assert litert.dequantize(q, 0.5, -3, np.float64).dtype == np.float64
    floats = np.array([0.25, 1.0], np.float32)
    np.testing.assert_array_equal(litert.dequantize(floats, 0.0, 0), floats)
    assert litert.keras_layer_of_tensor("model/quant_Conv1_relu/Relu6;model/x/y") == \
        "quant_Conv1_relu"
    assert litert.keras_layer_of_tensor("model/quant_block_2_add/add") == "quant_block_2_add"
    assert litert.keras_layer_of_tensor("serving_default_input_1:0") is None


def test_bad_files(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"definitely not a flatbuffer")
    for call in (litert.list_ops, litert.load_interpreter):
        with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
            call(str(bogus))
        with pytest.raises(FileNotFoundError, match="nope.tflite"):
            call(str(tmp_path / "nope.tflite"))
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        litert.list_ops(model_content=b"short")
    with pytest.raises(ValueError, match="cannot be loaded by the LiteRT interpreter"):
        litert.load_interpreter(model_content=b"TFL3 but nothing else")


def test_litert_modules_do_not_import_tensorflow():
    code = ("import sys\nimport fptflite.tflite.litert, fptflite.tflite.runner\n"
            "print('tensorflow' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"
