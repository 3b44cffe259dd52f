"""The runtimes a phone file meets (fptflite.tflite.runtimes): the same file on each, against
independent references, and the errors of a runtime that cannot run or cannot load it."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from helpers.runtimes import require_all, session_or_skip
from helpers.tiny_net import tiny_net

from fptflite.serving import dropin_check
from fptflite.tflite import convert, litert, runtimes
from fptflite.tflite.runner import TFLitePredictor

SIZE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small conv net with heatmap-like outputs as int8 (uint8 I/O) and float32 files."""
    model, crops = tiny_net(SIZE)
    root = tmp_path_factory.mktemp("runtimes")
    paths = {}
    for fmt in ("int8_ptq", "float32"):
        paths[fmt] = str(root / f"{fmt}.tflite")
        with open(paths[fmt], "wb") as f:
            f.write(convert.convert(model, fmt, crops if fmt == "int8_ptq" else None))
    return paths, crops


def test_interpreter_runtimes_run_the_file_with_and_without_xnnpack(files):
    paths, crops = files
    cpu = TFLitePredictor(paths["int8_ptq"], runtime="cpu")
    ref = TFLitePredictor(paths["int8_ptq"], runtime="cpu_reference")
    a, b = cpu(crops), ref(crops)
    assert a.shape == (16, SIZE, SIZE, 5) and a.std() > 0.01  # not a constant map
    step = cpu.session.output.quantization[0]
    # Two int8 kernel sets round differently by an output step (measured: 1 step at most).
    assert np.abs(a - b).max() <= 2 * step + 1e-7


def test_tflite214_runs_the_reference_kernels_bit_for_bit(files):
    """TFLite 2.14's XNNPACK delegate takes no int8 graph, so 2.14 runs TFLite's builtin int8
    kernels, the ones LiteRT runs without XNNPACK: the outputs are identical."""
    paths, crops = files
    session_or_skip("tflite2.14", paths["int8_ptq"])
    assert dropin_check.check_runs_on(paths["int8_ptq"], "2.14", crops[0]) == {
        "runtime": "tflite2.14", "ran": True,
        "converter_min_runtime_version": litert.min_runtime_version(paths["int8_ptq"])}
    old = TFLitePredictor(paths["int8_ptq"], runtime="tflite2.14")
    ref = TFLitePredictor(paths["int8_ptq"], runtime="cpu_reference")
    np.testing.assert_array_equal(old(crops), ref(crops))
    assert old.session.output.quantization == ref.session.output.quantization
    np.testing.assert_allclose(TFLitePredictor(paths["float32"], runtime="tflite2.14")(crops),
                               TFLitePredictor(paths["float32"])(crops), atol=1e-5)


def test_gpu_accelerator_runs_the_whole_file_in_float(files):
    """On the GPU an int8 file runs on dequantized weights in float (fp16): close to the
    CPU's int8 output, not equal to it; the float32 file within fp16 rounding."""
    paths, crops = files
    session_or_skip("gpu", paths["float32"])
    f32 = TFLitePredictor(paths["float32"], runtime="gpu")(crops)
    # Measured: max 6.0e-4 (fp16 arithmetic on the GPU).
    np.testing.assert_allclose(f32, TFLitePredictor(paths["float32"])(crops), atol=2e-3)
    int8_gpu = TFLitePredictor(paths["int8_ptq"], runtime="gpu")(crops)
    int8_cpu = TFLitePredictor(paths["int8_ptq"])(crops)
    # Measured: mean 3.8e-4, max one output step (1/256).
    step = TFLitePredictor(paths["int8_ptq"]).session.output.quantization[0]
    assert np.abs(int8_gpu - int8_cpu).mean() < 1.5e-3
    assert np.abs(int8_gpu - int8_cpu).max() <= 2 * step + 1e-7
    for path in paths.values():
        assert runtimes.gpu_residency(path) == {
            "checked": True, "fully_accelerated": True, "cpu_ops_log": []}


def test_a_file_the_old_runtime_cannot_load_names_the_op(tmp_path):
    """EQUAL on int16 is EQUAL version 5, newer than TensorFlow Lite 2.14 knows."""
    x = keras.Input((4,), dtype="int16")
    model = keras.Model(x, tf.cast(tf.equal(x, tf.constant(3, tf.int16)), tf.float32))
    path = str(tmp_path / "equal_v5.tflite")
    with open(path, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    runtimes.open_session("cpu", path)  # today's LiteRT loads it
    try:
        python = runtimes.tflite214_python()
    except runtimes.RuntimeUnavailable as e:
        if require_all():
            raise
        pytest.skip(str(e))
    assert python.endswith("bin/python")
    with pytest.raises(runtimes.RuntimeUnavailable,
                       match=r"tflite2.14 cannot load .*equal_v5.tflite.*EQUAL.*version '5'"):
        runtimes.open_session("tflite2.14", path)
    # export_android's --min_runtime check says the same; the converter's own metadata
    # claims 2.21 here, and 2.5 for the int8 conv files, which 2.14 does run.
    with pytest.raises(ValueError, match=r"does not run on TensorFlow Lite 2.14.*EQUAL.*'5'"):
        dropin_check.check_runs_on(path, "2.14", np.zeros((4,), np.float32))
    assert litert.min_runtime_version(path) == "2.21.0"


def test_unknown_runtime_and_a_missing_environment(files, tmp_path, monkeypatch):
    """A missing 2.14 environment is reported with the make target and never installed at
    run time: the export's check says "not run" unless it was asked for."""
    paths, crops = files
    with pytest.raises(ValueError, match="unknown runtime 'npu'"):
        TFLitePredictor(paths["int8_ptq"], runtime="npu")
    with pytest.raises(ValueError, match="preserve_all_tensors needs an interpreter runtime"):
        TFLitePredictor(paths["int8_ptq"], runtime="gpu", preserve_all_tensors=True)
    monkeypatch.setenv("FPTFLITE_RUNTIMES_DIR", str(tmp_path))
    message = r"TensorFlow Lite 2.14 environment missing \(.*tflite2.14\): make runtimes"
    with pytest.raises(runtimes.RuntimeNotInstalled, match=message):
        runtimes.open_session("tflite2.14", paths["int8_ptq"])
    assert os.listdir(tmp_path) == []  # nothing was created
    row = dropin_check.check_runs_on(paths["int8_ptq"], "2.14", crops[0])
    assert row["ran"] is False and "make runtimes" in row["reason"]
    with pytest.raises(runtimes.RuntimeNotInstalled, match=message):
        dropin_check.check_runs_on(paths["int8_ptq"], "2.14", crops[0], required=True)
