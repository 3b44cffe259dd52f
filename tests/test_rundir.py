"""The run directory's one home (fptflite.rundir): layout, resolving a run or a file to its
model, the QAT model of a run, and the errors naming the path, all without TensorFlow."""

import json
import os
import subprocess
import sys

import pytest

from fptflite import rundir


def _run(path, quantize=False, exported=True):
    path.mkdir(parents=True)
    (path / rundir.CONFIG_FILE).write_text(json.dumps({"quantize": quantize}))
    if exported:
        (path / ("best.h5" if quantize else "best.keras")).write_bytes(b"model")
    return str(path)


def test_layout_and_resolution(tmp_path):
    run = _run(tmp_path / "run")
    qat = _run(tmp_path / "run" / "qat", quantize=True)
    assert rundir.best_export(run) == os.path.join(run, "best.keras")
    assert rundir.best_export(qat) == os.path.join(qat, "best.h5")
    assert rundir.resolve_model(run) == os.path.join(run, "best.keras")
    assert rundir.resolve_model(os.path.join(qat, "best.h5")) == os.path.join(qat, "best.h5")
    assert rundir.qat_dir(run) == qat and rundir.qat_model_for(run) == os.path.join(qat, "best.h5")
    assert rundir.qat_model_for(os.path.join(run, "best.keras"), qat) == \
        os.path.join(qat, "best.h5")
    assert rundir.run_of(os.path.join(run, "best.keras")) == run
    assert rundir.run_of(str(tmp_path)) is None
    assert rundir.tflite_dir(run) == os.path.join(run, "tflite")
    assert rundir.parity_dir(run) == os.path.join(run, "parity")
    assert rundir.export_path(run, "final", False) == os.path.join(run, "final.keras")


def test_errors_name_the_path_and_what_was_expected(tmp_path):
    unfinished = _run(tmp_path / "unfinished", exported=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [
        (lambda: rundir.resolve_model(unfinished),
         f"{unfinished} holds no model: best.keras not found"),
        (lambda: rundir.resolve_model(str(plain)),
         f"{plain} is not a run directory: config.json not found"),
        (lambda: rundir.resolve_model(str(a_file)),
         f"{a_file}: expected a run directory or a model file"),
        (lambda: rundir.resolve_model(str(tmp_path / "nothing")),
         f"{tmp_path / 'nothing'}: no such run directory or model file"),
        (lambda: rundir.read_config(str(a_file)),
         f"{a_file}: expected a run directory .* got a file"),
        (lambda: rundir.qat_model_for(unfinished),
         f"{unfinished} has no QAT run .*python -m conversion.qat --model={unfinished}"),
        (lambda: rundir.qat_model_for(str(a_file)), f"{a_file} is a model file: give the QAT"),
    ]
    for call, message in cases:
        with pytest.raises(rundir.RunDirError, match=message):
            call()


def test_resolving_a_run_imports_no_tensorflow(tmp_path):
    run = _run(tmp_path / "run")
    code = ("import sys; from fptflite import rundir; from fptflite.serving import predictors; "
            f"print(rundir.resolve_model({run!r})); "
            "print('tensorflow' in sys.modules, 'tf_keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.split() == [os.path.join(run, "best.keras"), "False", "False"], \
        done.stderr[-2000:]
