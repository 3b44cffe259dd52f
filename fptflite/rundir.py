"""The run directory: one home for its layout (TensorFlow-free).

Every tool that takes a model takes a run directory or a model file, and every tool that
writes into a run writes where this module says::

    RUN/                      a float training run (training.train --run_dir=RUN)
        config.json           the resolved TrainConfig
        best.keras, final.keras   exports (best: the best evaluation so far)
        eval_history.json     every evaluation of the run (its learning curve)
        eval/                 the latest evaluation's results and metrics (the trainer's)
        checkpoints/, tensorboard/   resumable state and TensorBoard logs (the trainer's)
        qat/                  the QAT run of RUN's best export (conversion.qat), itself a run
                              directory: config.json, best.h5
        tflite/               the .tflite files (conversion.convert), each with its sidecars
        parity/               those files against the float model (conversion.evaluate_tflite,
                              one folder per file, the float model's results in float/)
        report.json, report.md    the main job's report (make demo)

Resolving a path to its model file reads JSON only, so ``fptflite.predict`` and the serving
code can take a run directory without importing TensorFlow.
"""

from __future__ import annotations

import json
import os

CONFIG_FILE = "config.json"
EVAL_HISTORY_FILE = "eval_history.json"
QAT_DIR = "qat"
TFLITE_DIR = "tflite"
EVAL_DIR = "eval"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
PARITY_DIR = "parity"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MODEL_FILE_EXTENSIONS = (".keras", ".h5", ".tflite")


class RunDirError(ValueError):
    """A path that is not what a tool expected (the message names the path and the
    expectation)."""


def model_file_extension(quantized: bool) -> str:
    """.h5 for QAT models (tfmot's layers do not round-trip through .keras), else .keras."""
    return ".h5" if quantized else ".keras"


def export_path(run_dir: str, kind: str, quantized: bool) -> str:
    """Where training exports a model: ``best`` or ``final``, .keras (float) or .h5 (QAT)."""
    return os.path.join(run_dir, kind + model_file_extension(quantized))


def is_run_dir(path: str) -> bool:
    """Whether ``path`` is a directory holding a run's config.json."""
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def read_config(run_dir: str) -> dict:
    """The config.json a run wrote, as a dict.

    Raises:
        RunDirError: ``run_dir`` is not a directory, or holds no config.json.
    """
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: expected a run directory (one holding {CONFIG_FILE}), "
                          "got " + ("a file" if os.path.exists(run_dir) else "nothing there"))
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunDirError(f"{run_dir} is not a run directory: {CONFIG_FILE} not found")
    with open(path) as f:
        return json.load(f)


def best_export(run_dir: str) -> str:
    """The best export of a run (.keras for a float run, .h5 for a QAT run).

    Raises:
        RunDirError: not a run directory, or the run has not exported a model yet.
    """
    quantized = bool(read_config(run_dir).get("quantize", False))
    path = export_path(run_dir, "best", quantized)
    if not os.path.isfile(path):
        raise RunDirError(f"{run_dir} holds no model: {os.path.basename(path)} not found "
                          "(the run has not finished an evaluation yet)")
    return path


def resolve_model(path: str) -> str:
    """A model file from a run directory (its best export) or a model file.

    Raises:
        RunDirError: nothing at ``path``, a directory that is not a finished run, or a file
            that is not a .keras, .h5 or .tflite model.
    """
    if os.path.isdir(path):
        return best_export(path)
    if not os.path.isfile(path):
        raise RunDirError(f"{path}: no such run directory or model file")
    if not path.endswith(MODEL_FILE_EXTENSIONS):
        raise RunDirError(f"{path}: expected a run directory or a model file "
                          f"({', '.join(MODEL_FILE_EXTENSIONS)})")
    return path


def run_of(path: str) -> str | None:
    """The run directory a model path belongs to (itself, or the folder of a model file that
    sits beside a config.json); None when there is none."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return folder if is_run_dir(folder) else None


def qat_dir(run_dir: str) -> str:
    return os.path.join(run_dir, QAT_DIR)


def tflite_dir(run_dir: str) -> str:
    return os.path.join(run_dir, TFLITE_DIR)


def parity_dir(run_dir: str) -> str:
    return os.path.join(run_dir, PARITY_DIR)


def qat_model_for(model: str, qat_model: str | None = None) -> str:
    """The QAT model file that goes with ``model``: ``qat_model`` (a QAT run directory or
    .h5 file) when given, else the QAT run inside the float run directory ``model``.

    Raises:
        RunDirError: no QAT model can be found, naming where it was looked for.
    """
    if qat_model:
        return resolve_model(qat_model)
    if not os.path.isdir(model):
        raise RunDirError(f"{model} is a model file: give the QAT model (a QAT run directory "
                          "or .h5 file) too, or a float run directory whose qat/ holds it")
    where = qat_dir(model)
    if not os.path.isdir(where):
        raise RunDirError(f"{model} has no QAT run ({where} not found): run "
                          f"python -m conversion.qat --model={model}")
    return best_export(where)
