"""The main job end to end: data -> float training -> QAT -> int8 TFLite -> parity report.

``make demo`` runs it on the embedded synthetic data with the ``demo`` config.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator

import numpy as np
from absl import logging

from fptflite import quantization, visualization
from fptflite.data import datasets, pipeline
from fptflite.evaluation import bootstrap, parity
from fptflite.evaluation import fidelity as fidelity_lib
from fptflite.quantization.model_io import load_model, model_file_extension
from fptflite.serving import android
from fptflite.tasks import configs, trainer
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
    # Measured on the demo (docs/quantization.md): calibrated QAT without fine-tuning kept the
    # float AP best (+0.03 / -0.01 points on 150 / 600 val images; 1 epoch at 1/100 of the
    # float LR: -0.27 / -0.09; 2 epochs at 1/10: -0.12 / -0.19), so the default is 0 epochs.
    qat_epochs: int = 0
    qat_learning_rate: float | None = None
    num_calibration: int = datasets.DEFAULT_NUM_CALIBRATION
    max_ap_drop: float = parity_gate.DEFAULT_MAX_AP_DROP_POINTS
    num_threads: int | None = None
    android_assets_dir: str | None = None


@dataclasses.dataclass
class Stages:
    """Where each stage of a main job writes, and what the stages hand on."""

    cfg: configs.TrainConfig
    float_dir: str
    qat_dir: str
    tflite_dir: str
    eval_dir: str
    timings: dict[str, float] = dataclasses.field(default_factory=dict)

    def timed(self, key: str, t0: float) -> None:
        self.timings[key] = time.time() - t0


def prepare(opts: MainJobOptions) -> Stages:
    """The resolved config (data under ``out_dir/data`` unless given) and the stage dirs."""
    out = opts.out_dir
    cfg = configs.get_config(opts.config)
    data_dir = opts.data_dir or os.path.join(out, "data")
    cfg = configs.apply_overrides(cfg, [f"data.data_dir={data_dir}", *opts.overrides])
    return Stages(cfg, *(os.path.join(out, d) for d in ("float", "qat", "tflite", "eval")))


def convert_stage(st: Stages, qat_path: str, opts: MainJobOptions):
    """Stage 3: the float32, int8_ptq and int8_qat files, audited, with the QAT file's
    fidelity to its Keras model.

    Returns:
        (exported files by format, float model, QAT model, calibration crops, val persons).
    """
    cfg = st.cfg
    float_model = load_model(trainer.best_export(st.float_dir))
    qat_model = load_model(qat_path)
    h, w = cfg.input_size
    calib = datasets.split_calibration_crops(cfg.data, cfg.input_size, "train",
                                             opts.num_calibration)
    val_instances, _ = datasets.load_split(cfg.data, "val", w / h)
    fidelity_crops = datasets.calibration_crops(
        val_instances, cfg.input_size, fidelity_lib.DEFAULT_NUM_FIDELITY_CROPS, seed=1)
    exported = export_formats(st.tflite_dir, cfg.model, ["float32", "int8_ptq", "int8_qat"],
                              float_model, qat_model, calib)
    qat_file = exported["int8_qat"]
    qat_file["fidelity"] = fidelity_lib.check_qat_file(qat_model, qat_file["path"],
                                                       fidelity_crops, opts.num_threads)
    return exported, float_model, qat_model, calib, val_instances


def evaluate_stage(st: Stages, exported: dict, float_model, val_instances,
                   opts: MainJobOptions):
    """Stage 4: every file against the float model on the same val crops.

    Returns:
        (float_result, parity reports by format, decoded predictions by format).
    """
    cfg = st.cfg
    float_result, reports = parity.evaluate_files_against_float(
        {fmt: (exported[fmt]["path"], os.path.join(st.eval_dir, fmt))
         for fmt in ("float32", "int8_qat", "int8_ptq")},
        float_model, val_instances, cfg.data.paths()["val_ann"],
        os.path.join(st.eval_dir, "float"), opts.num_threads, cfg.eval_batch_size,
        cfg.eval_flip_test, cfg.eval_decode)
    predictions = {fmt: rep.pop("tflite_result")[1] for fmt, rep in reports.items()}
    return float_result, reports, predictions


def run(opts: MainJobOptions) -> dict:
    """Runs (or resumes) every stage; returns the report dict also written to report.json."""
    t_start = t = time.time()
    st = prepare(opts)
    cfg = st.cfg
    datasets.ensure_data(cfg.data)
    st.timed("data_s", t)

    t = time.time()
    print(f"== 1/4 float training ({cfg.model}, {cfg.epochs} epochs) -> {st.float_dir}",
          flush=True)
    trainer.train(cfg, st.float_dir)
    st.timed("train_s", t)

    t = time.time()
    print(f"== 2/4 quantization-aware training ({opts.qat_epochs} epochs"
          f"{': ranges calibrated, no fine-tuning' if not opts.qat_epochs else ''}) -> "
          f"{st.qat_dir}", flush=True)
    qat_path, qat_lr = train_qat(cfg, trainer.best_export(st.float_dir), st.qat_dir, opts)
    st.timed("qat_s", t)

    t = time.time()
    print(f"== 3/4 conversion -> {st.tflite_dir}", flush=True)
    exported, float_model, qat_model, calib, val_instances = convert_stage(st, qat_path, opts)
    st.timed("convert_s", t)

    t = time.time()
    print("== 4/4 float vs TFLite evaluation (LiteRT interpreter, CPU)", flush=True)
    float_result, reports, predictions = evaluate_stage(st, exported, float_model,
                                                        val_instances, opts)
    st.timed("evaluate_s", t)
    st.timed("total_s", t_start)

    report = build_report(st, opts, exported, float_result, reports, predictions,
                          val_instances, qat_path, qat_lr)
    t = time.time()
    print(f"== the shipped {report['shipped']['format']} file on every runtime", flush=True)
    report["runtimes"] = runtime_stage(st, report, exported, predictions, float_model,
                                       val_instances, opts)
    print(parity.format_runtimes(report["runtimes"]), flush=True)
    st.timed("runtimes_s", t)
    report["timings_s"] = {k: round(v, 1) for k, v in st.timings.items()}
    failed = [n for n, r in report["runtimes"].items() if r["ran"] and not r["passed"]]
    if failed:
        report["shipped"]["parity_passed"] = False
        report["shipped"]["verdict"] = "; ".join(report["runtimes"][n]["verdict"]
                                                 for n in failed)
    write_json_atomic(os.path.join(opts.out_dir, "report.json"), report)
    write_bytes_atomic(os.path.join(opts.out_dir, "report.md"),
                       render_markdown(report).encode())
    if not report["shipped"]["parity_passed"]:
        raise parity_gate.ParityError(f"{report['shipped']['verdict']}; nothing shipped "
                                      f"(report: {os.path.join(opts.out_dir, 'report.md')})")
    if opts.android_assets_dir:
        export_android_assets(report, report["shipped"]["format"], float_model, qat_model,
                              calib, opts.android_assets_dir, st.tflite_dir, val_instances)
    logging.info("main job done in %.0f s", st.timings["total_s"])
    return report


def runtime_stage(st: Stages, report: dict, exported: dict, predictions: dict, float_model,
                  val_instances, opts: MainJobOptions) -> dict[str, dict]:
    """The shipped file on every runtime (``fptflite.tflite.runtimes``) against the float
    model and against its own keypoints on the CPU runtime, each checked against the budget.

    Returns:
        runtime -> parity row with "ran", "passed" and "verdict" (or the reason it did not
        run here: such a runtime is reported, never silently dropped).
    """
    fmt, cfg = report["shipped"]["format"], st.cfg
    path = exported[fmt]["path"]
    rows = {"cpu": {**report["parity"][fmt], "ran": True}}
    rows.update(parity.evaluate_on_runtimes(
        path, float_model, val_instances, cfg.data.paths()["val_ann"],
        os.path.join(st.eval_dir, "runtimes"), predictions[fmt],
        num_threads=opts.num_threads, batch_size=cfg.eval_batch_size,
        flip_test=cfg.eval_flip_test, decode=cfg.eval_decode))
    for name, row in rows.items():
        if row["ran"]:
            row["verdict"], row["passed"] = parity_verdict(
                row["reference_ap"], row["candidate_ap"], opts.max_ap_drop,
                f"{path} on {name}")
    return rows


def draw_pictures(out: str, val_instances, float_pred: dict, int8_pred: dict,
                  reports: dict) -> dict[str, str]:
    """Skeletons of the shipped int8 file and of the float model, and the parity plot."""
    return {
        "skeletons_int8": visualization.skeleton_grid(
            val_instances, int8_pred["coords"], int8_pred["scores"],
            os.path.join(out, "skeletons_int8.png")),
        "skeletons_float": visualization.skeleton_grid(
            val_instances, float_pred["coords"], float_pred["scores"],
            os.path.join(out, "skeletons_float.png")),
        "parity": visualization.parity_plot(
            {k: reports[k] for k in INT8_FORMATS}, os.path.join(out, "parity.png")),
    }


def build_report(st: Stages, opts: MainJobOptions, exported: dict, float_result, reports: dict,
                 predictions: dict, val_instances, qat_path: str, qat_lr: float | None
                 ) -> dict:
    """Chooses the shipped int8 file, checks it against the budget, draws the pictures and
    returns the report dict (report.json)."""
    cfg = st.cfg
    float_stats, float_pred, float_results_file = float_result
    differences = ap_differences(cfg.data.paths()["val_ann"], reports, float_results_file)
    for d in differences.values():
        print(bootstrap.format_difference(d["a"], d["b"], d), flush=True)
    shipped_fmt, reason = choose_int8(reports, differences[QAT_MINUS_PTQ])
    shipped_path = exported[shipped_fmt]["path"]
    verdict, passed = parity_verdict(float_stats["AP"], reports[shipped_fmt]["candidate_ap"],
                                     opts.max_ap_drop, shipped_path)
    print(f"shipping {shipped_fmt}: {reason}\n{verdict}", flush=True)
    return {
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
        "float_model": trainer.best_export(st.float_dir),
        "qat_model": qat_path,
        "parity": {k: {kk: vv for kk, vv in v.items() if kk not in ("stats", "float_stats")}
                   for k, v in reports.items()},
        "pictures": draw_pictures(opts.out_dir, val_instances, float_pred,
                                  predictions[shipped_fmt], reports),
        "timings_s": {k: round(v, 1) for k, v in st.timings.items()},
    }


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
                                    datasets.split_calibration_crops(cfg.data, cfg.input_size))
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

## The shipped file on every runtime

{parity.format_runtimes(report['runtimes']) if report.get('runtimes') else ''}

## Files

| format | file | size | op audit |
|---|---|---:|---|
{files}

## Time (s)

data {t['data_s']}, training {t['train_s']}, QAT {t['qat_s']}, conversion {t['convert_s']},
evaluation {t['evaluate_s']}, runtimes {t.get('runtimes_s', 0)}, total {t['total_s']}

## Pictures

![shipped int8 predictions](skeletons_int8.png)

![float predictions](skeletons_float.png)

![parity](parity.png)
"""


def val_crop_batches(val_instances, calib) -> Iterator[np.ndarray]:
    """The val persons' eval crops [B, S, S, 3], streamed in batches of 64."""
    size = calib.shape[1:3]
    for images, _ in pipeline.iterate_eval_crops(
            pipeline.eval_dataset(val_instances, size, 64), val_instances, 64):
        yield images


def export_android_assets(report: dict, shipped_fmt: str, float_model, qat_model, calib,
                          assets_dir: str, work_dir: str, val_instances) -> dict:
    """Exports the Android drop-in (in-graph decoding) of the shipped int8 body with its model
    card (AP and parity from ``report``, its keypoints on every runtime against the CPU's on
    the val crops) into ``assets_dir``."""
    int8 = shipped_fmt.removeprefix("int8_")
    body = qat_model if int8 == "qat" else float_model
    measured = android.measured_from_report(report, int8)
    if int8 == "qat":
        measured["qat_model"] = report["qat_model"]
    return android.export_android(body, int8, assets_dir, calib, report["float_model"],
                                  work_dir, measured,
                                  agreement_batches=val_crop_batches(val_instances, calib))
