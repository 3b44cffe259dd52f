"""The main job end to end: data -> float training -> QAT -> int8 TFLite -> parity report.

``make demo`` runs it on the embedded synthetic data with the ``demo`` config.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time

from absl import logging

from fptflite import visualization
from fptflite.data.coco import load_instances
from fptflite.evaluation import parity
from fptflite.models.io import load_model
from fptflite.tasks import configs, trainer
from fptflite.tflite import convert as convert_lib
from fptflite.tflite.export import export_formats
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

QAT_TOLERANCE_POINTS = 1.0


@dataclasses.dataclass
class MainJobOptions:
    """Knobs of the main job (the config itself comes from ``configs``)."""

    out_dir: str
    config: str = "demo"
    data_dir: str | None = None
    overrides: tuple[str, ...] = ()
    qat_epochs: int = 2
    qat_learning_rate: float | None = None
    num_calibration: int = convert_lib.DEFAULT_NUM_CALIBRATION
    num_threads: int | None = None
    android_assets_dir: str | None = None


def run(opts: MainJobOptions) -> dict:
    """Runs (or resumes) every stage; returns the report dict also written to report.json."""
    t_start = time.time()
    timings: dict[str, float] = {}
    out = opts.out_dir
    cfg = configs.get_config(opts.config)
    data_dir = opts.data_dir or os.path.join(out, "data")
    cfg = configs.apply_overrides(cfg, [f"data.data_dir={data_dir}", *opts.overrides])
    float_dir, qat_dir = os.path.join(out, "float"), os.path.join(out, "qat")
    tflite_dir, eval_dir = os.path.join(out, "tflite"), os.path.join(out, "eval")

    t = time.time()
    paths = trainer.ensure_data(cfg)
    timings["data_s"] = time.time() - t

    t = time.time()
    print(f"== 1/4 float training ({cfg.model}, {cfg.epochs} epochs) -> {float_dir}", flush=True)
    trainer.train(cfg, float_dir)
    timings["train_s"] = time.time() - t

    t = time.time()
    print(f"== 2/4 quantization-aware training ({opts.qat_epochs} epochs) -> {qat_dir}",
          flush=True)
    qcfg = configs.qat_config(cfg, trainer.best_export(float_dir), opts.qat_epochs,
                      opts.qat_learning_rate, [])
    trainer.train(qcfg, qat_dir)
    timings["qat_s"] = time.time() - t

    t = time.time()
    print(f"== 3/4 conversion -> {tflite_dir}", flush=True)
    float_model = load_model(trainer.best_export(float_dir))
    qat_model = load_model(trainer.best_export(qat_dir))
    h, w = cfg.input_size
    train_instances, _ = load_instances(paths["train_ann"], paths["train_images"], w / h)
    calib = convert_lib.calibration_crops(train_instances, cfg.input_size, opts.num_calibration)
    exported = export_formats(tflite_dir, cfg.model, ["float32", "int8_ptq", "int8_qat"],
                              float_model, qat_model, calib)
    timings["convert_s"] = time.time() - t

    t = time.time()
    print("== 4/4 float vs TFLite evaluation (LiteRT interpreter, CPU)", flush=True)
    val_instances, _ = load_instances(paths["val_ann"], paths["val_images"], w / h,
                                      det_file=paths["val_det"])
    reports, predictions, float_result = {}, {}, None
    for fmt in ("float32", "int8_qat", "int8_ptq"):
        rep = parity.evaluate_against_float(
            exported[fmt]["path"], float_model, val_instances, paths["val_ann"],
            os.path.join(eval_dir, fmt), opts.num_threads, cfg.eval_batch_size,
            cfg.eval_flip_test, cfg.eval_decode, float_result, label=fmt)
        float_result = rep.pop("float_result")
        predictions[fmt] = rep.pop("tflite_result")[1]
        reports[fmt] = rep
    timings["evaluate_s"] = time.time() - t
    timings["total_s"] = time.time() - t_start

    float_stats, float_pred = float_result
    qat_pred = predictions["int8_qat"]
    pictures = {
        "skeletons_int8_qat": visualization.skeleton_grid(
            val_instances, qat_pred["coords"], qat_pred["scores"],
            os.path.join(out, "skeletons_int8_qat.png")),
        "skeletons_float": visualization.skeleton_grid(
            val_instances, float_pred["coords"], float_pred["scores"],
            os.path.join(out, "skeletons_float.png")),
        "parity": visualization.parity_plot(
            {k: reports[k] for k in ("int8_qat", "int8_ptq")}, os.path.join(out, "parity.png")),
    }
    report = {
        "config": opts.config,
        "model": cfg.model,
        "input_size": list(cfg.input_size),
        "float_ap": float_stats["AP"],
        "float32_tflite_ap": reports["float32"]["candidate_ap"],
        "int8_qat_ap": reports["int8_qat"]["candidate_ap"],
        "int8_ptq_ap": reports["int8_ptq"]["candidate_ap"],
        "int8_qat_delta_points": reports["int8_qat"]["ap_delta_points"],
        "int8_ptq_delta_points": reports["int8_ptq"]["ap_delta_points"],
        "int8_qat_within_tolerance": reports["int8_qat"]["ap_delta_points"]
        >= -QAT_TOLERANCE_POINTS,
        "float_stats": float_stats,
        "tflite": {fmt: {"path": e["path"], "size_bytes": e["audit"]["size_bytes"],
                         "audit_passed": e["audit"]["passed"],
                         "ops": e["audit"]["ops"]} for fmt, e in exported.items()},
        "float_model": trainer.best_export(float_dir),
        "qat_model": trainer.best_export(qat_dir),
        "parity": {k: {kk: vv for kk, vv in v.items() if kk not in ("stats", "float_stats")}
                   for k, v in reports.items()},
        "pictures": pictures,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    write_json_atomic(os.path.join(out, "report.json"), report)
    write_bytes_atomic(os.path.join(out, "report.md"), render_markdown(report).encode())
    if opts.android_assets_dir:
        copy_android_assets(exported["int8_qat"]["path"], opts.android_assets_dir)
    logging.info("main job done in %.0f s", timings["total_s"])
    return report


def render_markdown(report: dict) -> str:
    """A short human-readable report with the parity table and the pictures."""
    rows = parity.format_parity(report["parity"])
    t = report["timings_s"]
    files = "\n".join(
        f"| {fmt} | `{os.path.basename(v['path'])}` | {v['size_bytes'] / 1e6:.2f} MB | "
        f"{'pass' if v['audit_passed'] else 'FAIL'} |" for fmt, v in report["tflite"].items())
    return f"""# fptflite main job: {report['model']} ({report['config']})

Input {report['input_size'][0]}x{report['input_size'][1]}; validation with ground-truth boxes;
COCO keypoint AP from pycocotools.

## Float vs TFLite (LiteRT interpreter, CPU, same crops)

{rows}

int8 QAT within {QAT_TOLERANCE_POINTS} AP point of float: **{report['int8_qat_within_tolerance']}**

## Files

| format | file | size | op audit |
|---|---|---:|---|
{files}

## Time (s)

data {t['data_s']}, training {t['train_s']}, QAT {t['qat_s']}, conversion {t['convert_s']},
evaluation {t['evaluate_s']}, total {t['total_s']}

## Pictures

![int8 QAT predictions](skeletons_int8_qat.png)

![float predictions](skeletons_float.png)

![parity](parity.png)
"""


def copy_android_assets(tflite_path: str, assets_dir: str) -> None:
    """Copies the int8 model and its metadata where the Android demo picks them up."""
    os.makedirs(assets_dir, exist_ok=True)
    for src, name in ((tflite_path, "fasterpose_int8.tflite"),
                      (os.path.splitext(tflite_path)[0] + ".json", "fasterpose_int8.json")):
        tmp = os.path.join(assets_dir, "." + name + ".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(assets_dir, name))
