"""The main job end to end, on one run directory: data -> float training -> QAT -> .tflite
files -> float vs file evaluation -> the shipped int8 file on every runtime -> Android drop-in.

``make demo`` runs it on the embedded synthetic data with the ``demo`` config. Every step is
the stage function a command-line tool runs (``tasks/stages.py``), with the tool's defaults,
on the layout every tool reads (``fptflite.rundir``), so after it README's commands work on
its run directory. What the main job adds is the choice of the int8 file to ship (paired
bootstrap, else keypoint error), the report with its pictures, and the model card's figures.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging

from fptflite import results, rundir, visualization
from fptflite.data import datasets
from fptflite.evaluation import bootstrap, parity
from fptflite.results import INT8_FORMATS
from fptflite.serving import android
from fptflite.tasks import configs, stages, trainer
from fptflite.tflite import parity_gate, web_runtime
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

EVALUATED_FORMATS = ("float32", *INT8_FORMATS)
QAT_MINUS_PTQ = "int8_qat - int8_ptq"


@dataclasses.dataclass
class MainJobOptions:
    """Knobs of the main job (the config itself comes from ``configs``)."""

    run_dir: str
    config: str = "demo"
    data_dir: str | None = None
    overrides: tuple[str, ...] = ()
    qat_epochs: int = stages.DEFAULT_QAT_EPOCHS
    qat_learning_rate: float | None = None
    num_calibration: int = datasets.DEFAULT_NUM_CALIBRATION
    max_drop: float = parity_gate.DEFAULT_MAX_DROP_POINTS
    num_threads: int | None = None
    android_assets_dir: str | None = None


@dataclasses.dataclass
class Timings:
    """Seconds per stage."""

    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def timed(self, key: str, t0: float) -> None:
        self.seconds[key] = time.time() - t0


def prepare(opts: MainJobOptions) -> configs.TrainConfig:
    """The resolved config (data under ``run_dir/data`` unless given)."""
    cfg = configs.get_config(opts.config)
    data_dir = opts.data_dir or os.path.join(opts.run_dir, "data")
    return configs.apply_overrides(cfg, [f"data.data_dir={data_dir}", *opts.overrides])


def run(opts: MainJobOptions) -> dict:
    """Runs (or resumes) every stage; returns the report dict also written to report.json."""
    t_start = t = time.time()
    run_dir, tm = opts.run_dir, Timings()
    cfg = prepare(opts)
    datasets.ensure_data(cfg.data)
    tm.timed("data_s", t)

    t = time.time()
    print(f"== 1/5 float training ({cfg.model}, {cfg.epochs} epochs) -> {run_dir}", flush=True)
    trainer.train(cfg, run_dir)
    tm.timed("train_s", t)

    t = time.time()
    print(f"== 2/5 quantization-aware training ({opts.qat_epochs} epochs"
          f"{': ranges calibrated, no fine-tuning' if not opts.qat_epochs else ''}) -> "
          f"{rundir.qat_dir(run_dir)}", flush=True)
    qat_path = stages.qat(run_dir, opts.qat_epochs, opts.qat_learning_rate,
                          num_calibration=opts.num_calibration)
    tm.timed("qat_s", t)

    t = time.time()
    print(f"== 3/5 conversion -> {rundir.tflite_dir(run_dir)}", flush=True)
    converted = stages.convert(run_dir, num_calibration=opts.num_calibration)
    tm.timed("convert_s", t)

    t = time.time()
    print("== 4/5 float vs TFLite evaluation (LiteRT, CPU)", flush=True)
    files = {fmt: converted.files[fmt]["path"] for fmt in EVALUATED_FORMATS}
    ev = stages.evaluate(files, run_dir, rundir.parity_dir(run_dir), stages.eval_data(run_dir),
                         num_threads=opts.num_threads)
    tm.timed("evaluate_s", t)
    tm.timed("total_s", t_start)

    report = build_report(cfg, opts, converted, ev, qat_path, tm)
    t = time.time()
    print(f"== 5/5 the shipped {report['shipped']['format']} file on every runtime", flush=True)
    report["runtimes"] = runtime_stage(report, converted, ev, opts)
    print(parity.format_runtimes(report["runtimes"]), flush=True)
    tm.timed("runtimes_s", t)
    report["timings_s"] = {k: round(v, 1) for k, v in tm.seconds.items()}
    failed = [n for n, r in report["runtimes"].items() if r["ran"] and not r["passed"]]
    if failed:
        report["shipped"]["parity_passed"] = False
        report["shipped"]["verdict"] = "; ".join(report["runtimes"][n]["verdict"]
                                                 for n in failed)
    write_json_atomic(os.path.join(run_dir, rundir.REPORT_JSON), report)
    write_bytes_atomic(os.path.join(run_dir, rundir.REPORT_MD),
                       render_markdown(report).encode())
    if not report["shipped"]["parity_passed"]:
        raise parity_gate.ParityError(f"{report['shipped']['verdict']}; nothing shipped "
                                      f"(report: {os.path.join(run_dir, rundir.REPORT_MD)})")
    if opts.android_assets_dir:
        int8 = report["shipped"]["format"].removeprefix("int8_")
        stages.export_android(run_dir, opts.android_assets_dir, int8,
                              num_calibration=opts.num_calibration,
                              work_dir=rundir.tflite_dir(run_dir),
                              measured=android.measured_from_report(report, int8))
    logging.info("main job done in %.0f s", tm.seconds["total_s"])
    return report


def runtime_stage(report: dict, converted: stages.Converted, ev: stages.Evaluation,
                  opts: MainJobOptions) -> dict[str, dict]:
    """The shipped file on every runtime (``fptflite.tflite.runtimes``) against the float
    model and against its own keypoints on the CPU runtime, each checked against the budget.

    Returns:
        runtime -> parity row with "ran", "passed" and "verdict" (or the reason it did not
        run here: such a runtime is reported, never silently dropped).
    """
    fmt = report["shipped"]["format"]
    path = converted.files[fmt]["path"]
    cpu_pred = ev.reports[fmt]["tflite_result"][1]
    rows = {"cpu": {**report["parity"][fmt], "ran": True}}
    rows.update(parity.evaluate_on_runtimes(
        path, converted.float_model, ev.instances, ev.ann_file,
        os.path.join(rundir.parity_dir(opts.run_dir), "runtimes"), cpu_pred,
        num_threads=opts.num_threads, batch_size=ev.settings.batch_size,
        flip_test=ev.settings.flip_test, decode=ev.settings.decode, metric=ev.metric))
    if rows.get("web_gpu", {}).get("ran"):  # which ops LiteRT.js ran on WebGPU
        rows["web_gpu"]["residency"] = web_runtime.web_gpu_residency(path)
    for name, row in rows.items():
        if row["ran"]:
            row["verdict"], row["passed"] = parity_verdict(
                row["reference_score"], row["candidate_score"], opts.max_drop,
                f"{path} on {name}", ev.metric.name)
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


def build_report(cfg: configs.TrainConfig, opts: MainJobOptions, converted: stages.Converted,
                 ev: stages.Evaluation, qat_path: str, tm: Timings) -> dict:
    """Chooses the shipped int8 file, checks it against the budget, draws the pictures and
    returns the report dict (report.json)."""
    float_stats, float_pred, float_results_file = ev.float_result
    reports = {fmt: {k: v for k, v in rep.items() if k != "tflite_result"}
               for fmt, rep in ev.reports.items()}
    predictions = {fmt: rep["tflite_result"][1] for fmt, rep in ev.reports.items()}
    differences = ap_differences(ev.ann_file, reports, float_results_file)
    for d in differences.values():
        print(bootstrap.format_difference(d["a"], d["b"], d), flush=True)
    shipped_fmt, reason = choose_int8(reports, differences[QAT_MINUS_PTQ])
    shipped_path = converted.files[shipped_fmt]["path"]
    float_score = ev.metric.value(float_stats)
    verdict, passed = parity_verdict(float_score, reports[shipped_fmt]["candidate_score"],
                                     opts.max_drop, shipped_path, ev.metric.name)
    print(f"shipping {shipped_fmt}: {reason}\n{verdict}", flush=True)
    qat_cfg = configs.load_config(rundir.qat_dir(opts.run_dir))
    return {
        "config": opts.config,
        "model": cfg.model,
        "metric": ev.metric.name,
        "input_size": list(cfg.input_size),
        "run_dir": opts.run_dir,
        "float_score": float_score,
        **{f"{fmt}_score": reports[fmt]["candidate_score"] for fmt in EVALUATED_FORMATS},
        **{f"{fmt}_delta_points": reports[fmt]["score_delta_points"] for fmt in INT8_FORMATS},
        "shipped": {"format": shipped_fmt, "path": shipped_path, "reason": reason,
                    "max_drop_points": opts.max_drop, "parity_passed": passed,
                    "verdict": verdict},
        "ap_differences": differences,
        "int8_qat_fidelity": converted.files["int8_qat"].get("fidelity"),
        "qat_recipe": {"epochs": qat_cfg.epochs,
                       "learning_rate": qat_cfg.learning_rate if qat_cfg.epochs else None},
        "float_stats": float_stats,
        "tflite": {fmt: {"path": e["path"], "size_bytes": e["audit"]["size_bytes"],
                         "audit_passed": e["audit"]["passed"],
                         "ops": e["audit"]["ops"]} for fmt, e in converted.files.items()},
        "float_model": rundir.best_export(opts.run_dir),
        "qat_model": qat_path,
        "evaluation": dataclasses.asdict(ev.settings),
        "parity": {k: {kk: vv for kk, vv in v.items() if kk not in ("stats", "float_stats")}
                   for k, v in reports.items()},
        "pictures": draw_pictures(opts.run_dir, ev.instances, float_pred,
                                  predictions[shipped_fmt], reports),
        "timings_s": {k: round(v, 1) for k, v in tm.seconds.items()},
    }


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
    aps = (f"{qat['metric']} {100 * qat['candidate_score']:.2f} (int8_qat) vs "
           f"{100 * ptq['candidate_score']:.2f} (int8_ptq), float "
           f"{100 * qat['reference_score']:.2f}")
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


def parity_verdict(float_score: float, int8_score: float, max_drop: float,
                   path: str, metric: str) -> tuple[str, bool]:
    """(verdict line naming both scores and the metric, passed) against the budget."""
    try:
        return parity_gate.check_drop(float_score, int8_score, max_drop, path,
                                      metric=metric), True
    except parity_gate.ParityError as e:
        return str(e), False


def render_markdown(report: dict) -> str:
    """report.md: the run's figures as rows of the one renderer that also writes them into
    BENCHMARKS.md (``results.render_demo``), the shipped file's verdict and the pictures."""
    rows = results.render_demo(results.demo_results(report))
    table = "\n".join(f"| {results.markdown_cell(r.what)} | {results.markdown_cell(r.figure)} |"
                      for r in rows)
    h, w = report["input_size"]
    shipped = report["shipped"]
    return f"""# fptflite main job: {report['model']} ({report['config']})

Input {h}x{w}; validation with ground-truth boxes; {report['metric']} from
{'pycocotools' if report['metric'] == 'AP' else 'the PCKh evaluation'}; run directory
`{report['run_dir']}`.

## Shipped int8 file: {shipped['format']}

{shipped['reason']}.

{shipped['verdict']}

## Figures

| what | figure |
|---|---|
{table}

## Pictures

![shipped int8 predictions](skeletons_int8.png)

![float predictions](skeletons_float.png)

![parity](parity.png)
"""
