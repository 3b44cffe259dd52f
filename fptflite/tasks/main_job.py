"""The main job end to end: data -> float training -> QAT -> int8 TFLite -> parity report.

``make demo`` runs it on the embedded synthetic data with the ``demo`` config.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging

from fptflite import quantization, visualization
from fptflite.data.coco import load_instances
from fptflite.evaluation import bootstrap, parity
from fptflite.models.io import load_model, model_file_extension
from fptflite.tasks import configs, trainer
from fptflite.tflite import convert as convert_lib
from fptflite.tflite import fidelity as fidelity_lib
from fptflite.tflite import parity_gate
from fptflite.tflite.export import export_formats
from fptflite.utils.io import atomic_path, write_bytes_atomic, write_json_atomic

INT8_FORMATS = ("int8_qat", "int8_ptq")
QAT_MINUS_PTQ = "int8_qat - int8_ptq"


@dataclasses.dataclass
class MainJobOptions:
    """Knobs of the main job (the config itself comes from ``configs``)."""

    out_dir: str
    config: str = "demo"
    data_dir: str | None = None
    overrides: tuple[str, ...] = ()
    # Measured on the demo (README, issue 7): calibrated QAT without fine-tuning kept the
    # float AP best (+0.03 / -0.01 points on 150 / 600 val images; 1 epoch at 1/100 of the
    # float LR: -0.27 / -0.09; 2 epochs at 1/10: -0.12 / -0.19), so the default is 0 epochs.
    qat_epochs: int = 0
    qat_learning_rate: float | None = None
    num_calibration: int = convert_lib.DEFAULT_NUM_CALIBRATION
    max_ap_drop: float = parity_gate.DEFAULT_MAX_AP_DROP_POINTS
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
    print(f"== 2/4 quantization-aware training ({opts.qat_epochs} epochs"
          f"{': ranges calibrated, no fine-tuning' if not opts.qat_epochs else ''}) -> "
          f"{qat_dir}", flush=True)
    qat_path, qat_lr = train_qat(cfg, trainer.best_export(float_dir), qat_dir, opts)
    timings["qat_s"] = time.time() - t

    t = time.time()
    print(f"== 3/4 conversion -> {tflite_dir}", flush=True)
    float_model = load_model(trainer.best_export(float_dir))
    qat_model = load_model(qat_path)
    h, w = cfg.input_size
    train_instances, _ = load_instances(paths["train_ann"], paths["train_images"], w / h)
    calib = convert_lib.calibration_crops(train_instances, cfg.input_size, opts.num_calibration)
    val_instances, _ = load_instances(paths["val_ann"], paths["val_images"], w / h,
                                      det_file=paths["val_det"])
    fidelity_crops = convert_lib.calibration_crops(
        val_instances, cfg.input_size, fidelity_lib.DEFAULT_NUM_FIDELITY_CROPS, seed=1)
    exported = export_formats(tflite_dir, cfg.model, ["float32", "int8_ptq", "int8_qat"],
                              float_model, qat_model, calib, fidelity_images=fidelity_crops,
                              num_threads=opts.num_threads)
    timings["convert_s"] = time.time() - t

    t = time.time()
    print("== 4/4 float vs TFLite evaluation (LiteRT interpreter, CPU)", flush=True)
    float_result, reports = parity.evaluate_files_against_float(
        {fmt: (exported[fmt]["path"], os.path.join(eval_dir, fmt))
         for fmt in ("float32", "int8_qat", "int8_ptq")},
        float_model, val_instances, paths["val_ann"], os.path.join(eval_dir, "float"),
        opts.num_threads, cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode)
    predictions = {fmt: rep.pop("tflite_result")[1] for fmt, rep in reports.items()}
    timings["evaluate_s"] = time.time() - t
    timings["total_s"] = time.time() - t_start

    float_stats, float_pred, float_results_file = float_result
    differences = ap_differences(paths["val_ann"], reports, float_results_file)
    for d in differences.values():
        print(bootstrap.format_difference(d["a"], d["b"], d), flush=True)
    shipped_fmt, reason = choose_int8(reports, differences[QAT_MINUS_PTQ])
    shipped_path = exported[shipped_fmt]["path"]
    verdict, passed = parity_verdict(float_stats["AP"], reports[shipped_fmt]["candidate_ap"],
                                     opts.max_ap_drop, shipped_path)
    print(f"shipping {shipped_fmt}: {reason}\n{verdict}", flush=True)
    int8_pred = predictions[shipped_fmt]
    pictures = {
        "skeletons_int8": visualization.skeleton_grid(
            val_instances, int8_pred["coords"], int8_pred["scores"],
            os.path.join(out, "skeletons_int8.png")),
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
        "shipped": {"format": shipped_fmt, "path": shipped_path, "reason": reason,
                    "max_ap_drop_points": opts.max_ap_drop, "parity_passed": passed,
                    "verdict": verdict},
        "ap_differences": differences,
        "int8_qat_fidelity": exported["int8_qat"].get("fidelity"),
        "qat_recipe": {"epochs": opts.qat_epochs, "learning_rate": qat_lr},
        "float_stats": float_stats,
        "tflite": {fmt: {"path": e["path"], "size_bytes": e["audit"]["size_bytes"],
                         "audit_passed": e["audit"]["passed"],
                         "ops": e["audit"]["ops"]} for fmt, e in exported.items()},
        "float_model": trainer.best_export(float_dir),
        "qat_model": qat_path,
        "parity": {k: {kk: vv for kk, vv in v.items() if kk not in ("stats", "float_stats")}
                   for k, v in reports.items()},
        "pictures": pictures,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    write_json_atomic(os.path.join(out, "report.json"), report)
    write_bytes_atomic(os.path.join(out, "report.md"), render_markdown(report).encode())
    if not passed:
        raise parity_gate.ParityError(f"{verdict}; nothing shipped (report: "
                                      f"{os.path.join(out, 'report.md')})")
    if opts.android_assets_dir:
        export_android_assets(report, shipped_fmt, float_model, qat_model, calib,
                              opts.android_assets_dir, tflite_dir)
    logging.info("main job done in %.0f s", timings["total_s"])
    return report


def train_qat(cfg, float_path: str, qat_dir: str, opts: MainJobOptions
              ) -> tuple[str, float | None]:
    """QAT stage: fine-tunes for ``opts.qat_epochs`` with the trainer, or with 0 epochs only
    wraps the float model with ranges calibrated on eval crops (saved as ``qat_dir/best.h5``).

    Returns:
        (the QAT model file, the learning rate used or None).
    """
    if opts.qat_epochs > 0:
        qcfg = configs.qat_config(cfg, float_path, opts.qat_epochs, opts.qat_learning_rate, [])
        trainer.train(qcfg, qat_dir)
        return trainer.best_export(qat_dir), qcfg.learning_rate
    path = os.path.join(qat_dir, "best" + model_file_extension(True))
    if not os.path.isfile(path):
        qat = quantization.quantize(load_model(float_path),
                                    convert_lib.config_calibration_crops(cfg))
        os.makedirs(qat_dir, exist_ok=True)
        with atomic_path(path) as tmp:
            qat.save(tmp)
    return path, None


def ap_differences(ann_file: str, reports: dict[str, dict], float_results_file: str
                   ) -> dict[str, dict]:
    """Paired-bootstrap AP differences (``bootstrap.paired_ap_difference``) between the two
    int8 files and of each against the float model, on the images they were scored on.

    Returns:
        {"int8_qat - int8_ptq", "int8_qat - float", "int8_ptq - float"} -> difference dict
        with the two names as "a" and "b" (the difference is a - b).
    """
    files = {f: reports[f]["results_file"] for f in INT8_FORMATS}
    tables = bootstrap.load_match_tables(ann_file, {**files, "float": float_results_file})
    pairs = [INT8_FORMATS, (INT8_FORMATS[0], "float"), (INT8_FORMATS[1], "float")]
    return {f"{a} - {b}": {"a": a, "b": b,
                           **bootstrap.paired_ap_difference(tables[a], tables[b])}
            for a, b in pairs}


def choose_int8(reports: dict[str, dict], qat_minus_ptq: dict) -> tuple[str, str]:
    """Picks the int8 file to ship: the one with the better AP when the difference is beyond
    noise (its bootstrap interval excludes 0); otherwise the one whose keypoints are closer
    to the float model's on the same crops.

    Args:
        reports: parity reports (``parity.evaluate_against_float``) keyed by format, with
            both ``INT8_FORMATS``.
        qat_minus_ptq: ``bootstrap.paired_ap_difference`` of the QAT file against the PTQ
            file.

    Returns:
        (format, the reason in words, with the measured numbers).
    """
    qat, ptq = (reports[f] for f in INT8_FORMATS)
    aps = (f"AP {100 * qat['candidate_ap']:.2f} (int8_qat) vs {100 * ptq['candidate_ap']:.2f} "
           f"(int8_ptq), float {100 * qat['reference_ap']:.2f}")
    d = qat_minus_ptq
    interval = (f"difference {d['delta_points']:+.2f} points, {100 * d['confidence']:.0f}% "
                f"CI [{d['ci_low_points']:+.2f}, {d['ci_high_points']:+.2f}] over "
                f"{d['num_images']} images")
    if not d["within_noise"]:
        best = INT8_FORMATS[0] if d["delta_points"] > 0 else INT8_FORMATS[1]
        return best, f"{aps}: {best} is better beyond noise ({interval})"
    errors = {f: reports[f]["mean_keypoint_error_px"] for f in INT8_FORMATS}
    best = min(INT8_FORMATS, key=lambda f: errors[f])
    return best, (f"{aps}: within noise ({interval}), so the keypoint error against the "
                  f"float model decides: {errors['int8_qat']:.3f} px (int8_qat) vs "
                  f"{errors['int8_ptq']:.3f} px (int8_ptq)")


def parity_verdict(float_ap: float, int8_ap: float, max_ap_drop: float,
                   path: str) -> tuple[str, bool]:
    """(verdict line naming both APs, passed) of the shipped file against the budget."""
    try:
        return parity_gate.check_ap_drop(float_ap, int8_ap, max_ap_drop, path), True
    except parity_gate.ParityError as e:
        return str(e), False


def _fidelity_line(fid: dict | None) -> str:
    if not fid:
        return ""
    return "Keras QAT model vs its int8 file, same crops: " + fidelity_lib.format_fidelity(
        "int8_qat", fid).split(": ", 1)[1]


def render_markdown(report: dict) -> str:
    """A short human-readable report with the parity table and the pictures."""
    rows = parity.format_parity(report["parity"])
    noise = "\n".join(f"- {bootstrap.format_difference(d['a'], d['b'], d)}"
                      for d in report["ap_differences"].values())
    t = report["timings_s"]
    files = "\n".join(
        f"| {fmt} | `{os.path.basename(v['path'])}` | {v['size_bytes'] / 1e6:.2f} MB | "
        f"{'pass' if v['audit_passed'] else 'FAIL'} |" for fmt, v in report["tflite"].items())
    return f"""# fptflite main job: {report['model']} ({report['config']})

Input {report['input_size'][0]}x{report['input_size'][1]}; validation with ground-truth boxes;
COCO keypoint AP from pycocotools.

## Float vs TFLite (LiteRT interpreter, CPU, same crops)

{rows}

Is an AP difference real or the luck of these images?

{noise}

## Shipped int8 file: {report['shipped']['format']}

{report['shipped']['reason']}.

{report['shipped']['verdict']}

{_fidelity_line(report.get('int8_qat_fidelity'))}

## Files

| format | file | size | op audit |
|---|---|---:|---|
{files}

## Time (s)

data {t['data_s']}, training {t['train_s']}, QAT {t['qat_s']}, conversion {t['convert_s']},
evaluation {t['evaluate_s']}, total {t['total_s']}

## Pictures

![shipped int8 predictions](skeletons_int8.png)

![float predictions](skeletons_float.png)

![parity](parity.png)
"""


def export_android_assets(report: dict, shipped_fmt: str, float_model, qat_model, calib,
                          assets_dir: str, work_dir: str) -> dict:
    """Exports the Android drop-in (in-graph decoding) of the shipped int8 body with its model
    card (AP and parity from ``report``) into ``assets_dir``."""
    from fptflite.serving import android

    int8 = shipped_fmt.removeprefix("int8_")
    body = qat_model if int8 == "qat" else float_model
    measured = android.measured_from_report(report, int8)
    if int8 == "qat":
        measured["qat_model"] = report["qat_model"]
    return android.export_android(body, int8, assets_dir, calib, report["float_model"],
                                  work_dir, measured)
