"""A main-job run's shipped int8 file and drop-in in the browser (LiteRT.js) against the float
model and against LiteRT's CPU runtime.

    python -m benchmarks.web_parity --model=runs/demo [--runtimes=web,web_gpu]
        [--out_json=docs/results/web_parity.json]

The heatmap file (the run's ``report.json`` "shipped" path, relative to the run's checkout)
runs on "cpu" and on each web runtime in one streaming pass over the run's val crops
(``parity.evaluate_files_against_float``): AP against the float model, and the keypoints'
shift against the CPU's (``parity.keypoint_shift``, heatmap px). The file keeps its
dynamic batch: the web runtimes run a static batch-1 copy, crop by crop. The run's drop-in
(``web_server.find_dropin``: RUN/android/, else the checkout's android_demo_assets/; skipped
when absent) runs on the same val crops through
``dropin_check.runtime_agreement``. A runtime that cannot start is reported as not run, with
the reason. Writes a results file (kind "figures") for ``python -m benchmarks.report``.
"""

import json
import os
import sys
import tempfile

from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.data import datasets, pipeline
from fptflite.evaluation import parity
from fptflite.quantization.model_io import load_model
from fptflite.serving import dropin_check, web_server
from fptflite.tasks import configs
from fptflite.tflite import runtimes
from fptflite.utils import cli
from fptflite.utils.io import write_json_atomic
from fptflite.utils.provenance import provenance

_RUN = cli.flag("model", help_note="Here a finished main-job run directory (default "
                "runs/demo, make demo's).")
_RUNTIMES = flags.DEFINE_list("runtimes", ["web", "web_gpu"], "Runtimes beside cpu.")
_OUT = cli.flag("out_json", default="docs/results/web_parity.json")


def main(argv):
    del argv
    run = os.path.abspath(_RUN.value or "runs/demo")
    checkout = os.path.dirname(os.path.dirname(run))
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    shipped = report["shipped"]
    path = shipped["path"] if os.path.isabs(shipped["path"]) else \
        os.path.join(checkout, shipped["path"])
    cfg = configs.from_dict(rundir.read_config(run))
    if not os.path.isabs(cfg.data.data_dir):  # written relative to the checkout
        cfg = configs.apply_overrides(
            cfg, [f"data.data_dir={os.path.join(checkout, cfg.data.data_dir)}"])
    h, w = cfg.input_size
    instances, _ = datasets.load_split(cfg.data, "val", w / h)
    float_model = load_model(rundir.best_export(run))
    rows = {}
    names = ["cpu"]
    for name in _RUNTIMES.value:
        try:
            runtimes.open_session(name, path)
            names.append(name)
        except runtimes.RuntimeUnavailable as e:
            rows[name] = {"ran": False, "reason": str(e)}
    with tempfile.TemporaryDirectory() as tmp:
        _, reports = parity.evaluate_files_against_float(
            {n: (path, os.path.join(tmp, n)) for n in names}, float_model, instances,
            cfg.data.paths()["val_ann"], os.path.join(tmp, "float"), None,
            cfg.eval_batch_size, cfg.eval_flip_test, cfg.eval_decode,
            runtime={n: n for n in names})
    cpu_pred = reports["cpu"]["tflite_result"][1]
    for name in names:
        rep = reports[name]
        rows[name] = {"ran": True, "ap": rep["candidate_score"],
                      "float_ap": rep["reference_score"],
                      "delta_points": rep["score_delta_points"],
                      "num_instances": rep["num_instances"]}
        if name != "cpu":
            rows[name]["shift_vs_cpu"] = parity.keypoint_shift(cpu_pred,
                                                               rep["tflite_result"][1])
    try:
        dropin, _ = web_server.find_dropin(run)
    except web_server.ModelError:
        dropin = None
    agreement = None
    if dropin:
        batches = (images for images, _ in pipeline.iterate_eval_crops(
            pipeline.eval_dataset(instances, tuple(cfg.input_size), 64), instances, 64))
        agreement = dropin_check.runtime_agreement(dropin, batches, _RUNTIMES.value)
    figures = []
    rel = os.path.relpath(path, checkout)
    for name, r in rows.items():
        if not r["ran"]:
            figures.append({"what": f"{rel} on {name}", "figure": f"not run: {r['reason']}"})
            continue
        s = r.get("shift_vs_cpu")
        figures.append({
            "what": f"{rel} ({shipped['format']}) on {name}, {r['num_instances']} val persons",
            "figure": f"AP {100 * r['ap']:.2f} vs float {100 * r['float_ap']:.2f} "
                      f"({r['delta_points']:+.2f} points)"
                      + (f"; keypoints vs cpu mean {s['mean_px']:.3f} / p95 {s['p95_px']:.3f}"
                         f" / max {s['max_px']:.2f} heatmap px, "
                         f"{100 * s['share_above_1px']:.2f}% > 1 px" if s else ""), **r})
    for name, a in (agreement or {}).items():
        figures.append({
            "what": f"drop-in {os.path.basename(dropin)} on {name} vs cpu, val crops",
            "figure": (f"keypoints mean {a['mean_px']:.4f} / p95 {a['p95_px']:.4f} / max "
                       f"{a['max_px']:.3f} heatmap px, {100 * a['share_above_1px']:.2f}% > 1 "
                       f"px, max score diff {a['max_score_diff']:.2e}") if a["ran"] else
                      f"not run: {a['reason']}", **a})
    for f in figures:
        print(f"{f['what']}: {f['figure']}")
    prov = provenance(sys.argv)
    prov["note"] = ("WebGPU on this machine is Mesa's lavapipe (Vulkan on the CPU): the "
                    "numbers are WebGPU arithmetic, not a GPU's speed.")
    write_json_atomic(_OUT.value, {"kind": "figures", "title": "The shipped file in the "
                                   "browser (LiteRT.js): parity", "provenance": prov,
                                   "result": figures})
    print(f"wrote {_OUT.value}")
    return 0


if __name__ == "__main__":
    cli.run_tool(main)
