"""The stages of the path from a trained model to a phone file, one function each.

    train           training.train           a float run directory RUN
    qat             conversion.qat           RUN/qat, itself a run directory (config, best.h5)
    convert         conversion.convert       RUN/tflite/NAME_{float32,float16,int8_ptq,int8_qat}
    evaluate        conversion.evaluate_tflite   a file against RUN's float model, on a runtime
    export_android  conversion.export_android    the Android drop-in with its model card

Each command-line tool is a flag parser over one of these, and ``make demo`` (the main job,
``tasks/main_job.py``) runs the same functions with the same defaults on one run directory, so
what the demo proves is what the tools do. Paths follow ``fptflite.rundir``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tf_keras as keras
from absl import logging

from fptflite import quantization, rundir
from fptflite.data import datasets, pipeline
from fptflite.evaluation import fidelity, metrics, parity
from fptflite.keypoints import NUM_KEYPOINTS
from fptflite.quantization.model_io import load_model
from fptflite.serving import android
from fptflite.tasks import configs, eval_settings, trainer
from fptflite.tasks.calibration import calibration_crops_for
from fptflite.tflite import convert as convert_lib
from fptflite.tflite import metadata, parity_gate, runtimes
from fptflite.tflite.export import export_formats
from fptflite.utils.io import atomic_path, write_json_atomic

# Measured on the demo (docs/quantization.md): calibrated QAT without fine-tuning kept the
# float AP best (+0.03 / -0.01 points on 150 / 600 val images; 1 epoch at 1/100 of the float
# LR: -0.27 / -0.09; 2 epochs at 1/10: -0.12 / -0.19), so the default is 0 epochs: the QAT
# model is the float model wrapped with ranges calibrated on eval crops of the training set.
DEFAULT_QAT_EPOCHS = 0
DEFAULT_FORMATS = ("float32", "float16", "int8_ptq", "int8_qat")
AGREEMENT_BATCH = 64


def qat(run_dir: str, epochs: int = DEFAULT_QAT_EPOCHS, learning_rate: float | None = None,
        overrides: Sequence[str] = (), strategy=None, deterministic: bool = False,
        num_calibration: int | None = None) -> str:
    """The QAT model of a float run, in ``RUN/qat`` (a run directory of its own).

    With ``epochs`` 0 the float run's best export is wrapped for QAT with activation ranges
    calibrated on eval crops of the training set (no fine-tuning); otherwise it is fine-tuned
    for ``epochs`` by the trainer (resumable like any run). ``num_calibration`` crops
    (default ``datasets.DEFAULT_NUM_CALIBRATION``) calibrate the ranges.

    Returns:
        The QAT model file (``RUN/qat/best.h5``).

    Raises:
        RunDirError: ``run_dir`` is not a finished float run (or is a QAT run).
    """
    float_cfg = configs.load_config(run_dir)
    if float_cfg.quantize:
        raise rundir.RunDirError(f"{run_dir} is a QAT run: give the float run directory")
    if epochs < 0:
        raise ValueError(f"QAT epochs must be >= 0, got {epochs}")
    float_path = rundir.best_export(run_dir)
    cfg = configs.qat_config(float_cfg, float_path, epochs, learning_rate, list(overrides))
    out = rundir.qat_dir(run_dir)
    if epochs > 0:
        trainer.train(cfg, out, strategy, deterministic=deterministic)
        return rundir.best_export(out)
    os.makedirs(out, exist_ok=True)
    trainer.check_config(cfg, out, is_chief=True)
    path = rundir.export_path(out, "best", quantized=True)
    if not os.path.isfile(path):
        crops = datasets.split_calibration_crops(
            cfg.data, cfg.input_size, "train",
            num_calibration or datasets.DEFAULT_NUM_CALIBRATION)
        model = quantization.quantize(load_model(float_path), crops)
        with atomic_path(path) as tmp:
            model.save(tmp)
    return path


@dataclasses.dataclass
class Converted:
    """What ``convert`` made: format -> {"path", "metadata", "audit"} (int8_qat also
    "fidelity"), the formats skipped with the reason, and the models and crops it used."""

    files: dict[str, dict]
    skipped: dict[str, str]
    float_model: keras.Model
    qat_model: keras.Model | None
    calibration: np.ndarray | None


def fidelity_crops(model: str, calibration: np.ndarray, input_size: Sequence[int]
                   ) -> np.ndarray:
    """The crops [N, H, W, 3] a QAT file's fidelity is measured on: the run's validation
    crops (what the file will be scored on), else the first calibration crops."""
    run = rundir.run_of(model)
    if run is None:
        return calibration[:fidelity.DEFAULT_NUM_FIDELITY_CROPS]
    cfg = configs.load_config(run)
    h, w = input_size
    val, _ = datasets.load_split(cfg.data, "val", w / h)
    return datasets.calibration_crops(val, input_size, fidelity.DEFAULT_NUM_FIDELITY_CROPS,
                                      seed=1)


def convert(model: str, out_dir: str | None = None, formats: Sequence[str] | None = None,
            qat_model: str | None = None, name: str | None = None,
            calib_ann_file: str | None = None, calib_image_dir: str | None = None,
            num_calibration: int | None = None, input_type: str = "uint8",
            output_type: str = "uint8", gpu_residency: bool = True) -> Converted:
    """Converts a float model (and its QAT model) to audited .tflite files with sidecars.

    Args:
        model: a float run directory or .keras file.
        out_dir: default ``RUN/tflite`` (required for a model file).
        formats: default ``DEFAULT_FORMATS``, where int8_qat is skipped (with the reason)
            when no QAT model exists; a format asked for that cannot be made is an error.
        qat_model: a QAT run directory or .h5 file (default ``RUN/qat``).
        name: file name stem (default the model's name).
        calib_ann_file, calib_image_dir: calibration data (default the run's training set).
        num_calibration: calibration crops (default ``datasets.DEFAULT_NUM_CALIBRATION``).
        gpu_residency: record in each audit whether every op runs on LiteRT's GPU.

    Raises:
        RunDirError: a missing model, run or QAT model (asked for), naming the path.
    """
    explicit = formats is not None
    formats = list(formats or DEFAULT_FORMATS)
    float_path = rundir.resolve_model(model)
    if out_dir is None:
        if not os.path.isdir(model):
            raise rundir.RunDirError(f"{model} is a model file: give an output folder")
        out_dir = rundir.tflite_dir(model)
    float_model = convert_lib.load_for_format(float_path, "float32")
    qat, skipped = None, {}
    if "int8_qat" in formats:
        try:
            qat = convert_lib.load_for_format(rundir.qat_model_for(model, qat_model),
                                              "int8_qat")
        except rundir.RunDirError as e:
            if explicit or qat_model:
                raise
            skipped["int8_qat"] = str(e)
            formats.remove("int8_qat")
            logging.warning("skipping int8_qat: %s", e)
    calib = None
    if any(f.startswith("int8") for f in formats):
        calib = calibration_crops_for(model, calib_ann_file, calib_image_dir,
                                      float_model.input_shape[1:3],
                                      num_calibration or datasets.DEFAULT_NUM_CALIBRATION)
    files = export_formats(out_dir, name or float_model.name, formats, float_model, qat, calib,
                           input_type, output_type)
    if "int8_qat" in files:
        files["int8_qat"]["fidelity"] = fidelity.check_qat_file(
            qat, files["int8_qat"]["path"],
            fidelity_crops(model, calib, float_model.input_shape[1:3]))
    _record_eval_settings(files, float_path)
    if gpu_residency:
        _record_gpu_residency(files)
    return Converted(files, skipped, float_model, qat, calib)


def _record_eval_settings(files: dict, float_path: str) -> None:
    """Adds the training config's evaluation settings (flip test, decoder) to each sidecar,
    so ``evaluate`` scores the file as the run scored its float model."""
    cfg, cfg_path = eval_settings.find_config(float_path)
    if cfg is None:
        return
    for entry in files.values():
        meta = metadata.read_metadata(entry["path"])
        if meta is not None:
            meta["evaluation"] = {"flip_test": cfg.eval_flip_test, "decode": cfg.eval_decode,
                                  "from": cfg_path}
            metadata.write_metadata(entry["path"], meta)


def _record_gpu_residency(files: dict) -> None:
    """Whether every op of each file stays on LiteRT's GPU accelerator, written into its
    .audit.json and printed (or why the accelerator could not run here)."""
    for fmt, entry in files.items():
        residency = runtimes.gpu_residency(entry["path"])
        entry["audit"]["gpu_residency"] = residency
        write_json_atomic(os.path.splitext(entry["path"])[0] + ".audit.json", entry["audit"])
        if not residency["checked"]:
            print(f"{fmt}: GPU residency not checked: {residency['reason']}", flush=True)
        else:
            print(f"{fmt}: LiteRT GPU accelerator: " + (
                "every op on the GPU" if residency["fully_accelerated"]
                else f"ops stay on the CPU {residency['cpu_ops_log']}"), flush=True)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The persons a model is scored on and where they came from."""

    ann_file: str
    image_dir: str
    det_file: str | None
    det_score_threshold: float
    skip_invalid: bool


def eval_data(model: str | None, ann_file: str | None = None, image_dir: str | None = None,
              det_file: str | None = None, det_score_threshold: float | None = None
              ) -> EvalData:
    """The evaluation data: the arguments given, else the validation split of the run that
    ``model`` belongs to (its detections and threshold if it used them), so a run's files
    are scored on what the run was scored on.

    Raises:
        RunDirError: no data given and no run to take it from.
    """
    run = rundir.run_of(model) if model else None
    cfg = configs.load_config(run) if run else None
    paths = cfg.data.paths() if cfg is not None else {}
    from_run = cfg is not None and not ann_file
    data = EvalData(
        ann_file=ann_file or paths.get("val_ann"),
        image_dir=image_dir or paths.get("val_images"),
        det_file=det_file if det_file or not from_run else paths.get("val_det"),
        det_score_threshold=det_score_threshold if det_score_threshold is not None
        else (cfg.data.det_score_threshold if cfg is not None else 0.0),
        skip_invalid=bool(cfg is not None and cfg.data.skip_invalid))
    if not data.ann_file or not data.image_dir:
        raise rundir.RunDirError("give the annotation file and the image folder (or a model "
                                 "from a run directory, whose validation set is used)")
    return data


def load_eval_persons(data: EvalData, input_size: Sequence[int],
                      head_boxes_mat: str | None = None) -> tuple[list, metrics.Metric]:
    """The persons of ``data`` (COCO or MPII, by the annotation file) and their metric."""
    h, w = input_size
    reader = datasets.file_reader(data.ann_file)
    instances, report = datasets.load_file(
        data.ann_file, data.image_dir, w / h, reader, det_file=data.det_file,
        det_score_threshold=data.det_score_threshold, head_boxes_mat=head_boxes_mat,
        skip_invalid=data.skip_invalid)
    print(f"{len(instances)} persons ({report.summary()}), {reader} annotations", flush=True)
    return instances, metrics.get_metric(reader)


@dataclasses.dataclass
class Evaluation:
    """``evaluate``'s result: the float model's (stats, predictions, results file), each
    file's parity report (with "tflite_result" = (stats, predictions, results file)), the
    metric and the settings used."""

    float_result: tuple
    reports: dict[str, dict]
    metric: metrics.Metric
    settings: eval_settings.EvalSettings
    instances: list
    ann_file: str


def evaluate(tflites: dict[str, str], model: str, out_dir: str, data: EvalData,
             runtime: str = "cpu", num_threads: int | None = None,
             flip_test: bool | None = None, decode: str | None = None,
             batch_size: int | None = None, head_boxes_mat: str | None = None,
             instances: list | None = None) -> Evaluation:
    """.tflite files against their float model on the same crops, in one streaming pass.

    Args:
        tflites: label -> .tflite path; each label's results go to ``out_dir/label``, the
            float model's to ``out_dir/float``.
        model: the float model (run directory or .keras file).
        data: the evaluation data (``eval_data``).
        runtime: where the files run (``runtimes.RUNTIMES``).
        flip_test, decode, batch_size: default the first file's sidecar, else the run's
            config (``eval_settings.resolve``).
        instances: the persons, when the caller has them loaded already.

    Raises:
        RunDirError: a missing model; ValueError: a QAT model or a file of another model.
        RuntimeUnavailable: the runtime cannot run here or cannot load a file.
    """
    float_path = rundir.resolve_model(model)
    float_model = parity_gate.load_float_reference(float_path)
    first = next(iter(tflites.values()))
    for path in tflites.values():
        parity_gate.check_compatible(path, float_model, float_path)
    settings = eval_settings.resolve(flip_test, decode, batch_size, [model, first], first)
    print(f"decode {settings.decode}, flip test {settings.flip_test}, batch "
          f"{settings.batch_size} (flags, else {settings.source})", flush=True)
    input_size = tuple(int(d) for d in float_model.input_shape[1:3])
    metric = metrics.get_metric(datasets.file_reader(data.ann_file))
    if instances is None:
        instances, metric = load_eval_persons(data, input_size, head_boxes_mat)
    float_result, reports = parity.evaluate_files_against_float(
        {label: (path, os.path.join(out_dir, label)) for label, path in tflites.items()},
        float_model, instances, data.ann_file, os.path.join(out_dir, "float"), num_threads,
        settings.batch_size, settings.flip_test, settings.decode, metric=metric,
        runtime=runtime)
    return Evaluation(float_result, reports, metric, settings, instances, data.ann_file)


def val_crop_batches(instances, input_size: Sequence[int]) -> Iterator[np.ndarray]:
    """The persons' eval crops [B, H, W, 3], streamed in batches of ``AGREEMENT_BATCH``."""
    for images, _ in pipeline.iterate_eval_crops(
            pipeline.eval_dataset(instances, tuple(input_size), AGREEMENT_BATCH), instances,
            AGREEMENT_BATCH):
        yield images


def export_android(model: str, out_dir: str, int8: str = "qat", qat_model: str | None = None,
                   calib_ann_file: str | None = None, calib_image_dir: str | None = None,
                   num_calibration: int | None = None, work_dir: str | None = None,
                   measured: dict | None = None, min_runtime: str | None = "2.14",
                   min_runtime_required: bool = False, agreement: bool = True) -> dict:
    """The Android drop-in of a run's (or a model file's) int8 body, with its model card.

    Args:
        model: a float run directory or .keras file (17 COCO keypoints).
        out_dir: the assets folder.
        int8: "qat" (the QAT model, default ``RUN/qat``) or "ptq" (the float model
            calibrated on eval crops of the training set).
        measured: card entries measured elsewhere (``android.measured_from_report``).
        min_runtime: the oldest TensorFlow Lite the file must run on; not installed here, the
            card says not run (unless ``min_runtime_required``).
        agreement: compare the drop-in's keypoints on every runtime with the CPU's on the
            run's validation crops (a run directory only).

    Raises:
        RunDirError: a missing model or QAT model, or a model that is not 17 keypoints.
    """
    source = rundir.resolve_model(model)
    float_model = load_model(source)
    k = int(float_model.output_shape[-1])
    if k != NUM_KEYPOINTS:
        raise rundir.RunDirError(
            f"{source} predicts {k} keypoints, but the Android drop-in replaces MoveNet, whose "
            f"contract is COCO's {NUM_KEYPOINTS} keypoints (an MPII model has 16): export a "
            "model trained on a COCO-layout dataset, or use conversion.convert for a plain "
            ".tflite")
    body = load_model(rundir.qat_model_for(model, qat_model)) if int8 == "qat" else float_model
    size = tuple(int(d) for d in float_model.input_shape[1:3])
    calib = calibration_crops_for(model, calib_ann_file, calib_image_dir, size,
                                  num_calibration or datasets.DEFAULT_NUM_CALIBRATION)
    batches = None
    run = rundir.run_of(model)
    if agreement and run is not None:
        cfg = configs.load_config(run)
        val, _ = datasets.load_split(cfg.data, "val", size[1] / size[0])
        batches = val_crop_batches(val, size)
    measured = measured or {"ap": None, "parity": None,
                            "ap_note": "not measured here: make demo measures it"}
    return android.export_android(body, int8, out_dir, calib, source, work_dir, measured,
                                  min_runtime=min_runtime,
                                  min_runtime_required=min_runtime_required,
                                  agreement_batches=batches)
