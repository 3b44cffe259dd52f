"""Evaluation of a .tflite on a runtime (COCO AP or MPII PCKh, by the annotation file),
against its float model.

    python -m conversion.evaluate_tflite --tflite=FILE --model=RUN_OR_KERAS \
        [--ann_file=... --image_dir=... --det_file=...] [--runtime=cpu] [--num_threads=N] \
        [--out_dir=RUN/parity] [--max_drop=0.5]

Same preprocessing, decoding and metric as training.evaluate; the data defaults to the
validation set of --model's run (its detections and threshold if it used them); flip test,
decoder and batch size to the .tflite sidecar's "evaluation" section, else the run's config.
Evaluation streams: memory holds one batch of heatmaps and the decoded keypoints, whatever
the number of boxes.

Writes, into OUT_DIR/FILE_STEM, the file's results, a parity report (both scores, the delta
with its paired-bootstrap interval over COCO images, per-keypoint pixel error between the two
models on the same crops, heatmap correlation) and parity.png, prints the file's score as
"METRIC NN.NN" lines, and exits with status 1 (naming both scores) when the file scores more
than --max_drop points below the float model; 2 on bad input (a path that is not a model, a
file of another model, a runtime that cannot run here).
"""

import os
import sys
import time

from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.evaluation import bootstrap, parity
from fptflite.tasks import stages
from fptflite.tflite import parity_gate, runtimes
from fptflite.utils import cli

FLAGS = cli.define(
    "tflite", "model", "ann_file", "image_dir", "det_file", "det_score_threshold",
    "head_boxes_mat", "runtime", "num_threads", "flip_test", "decode", "batch_size", "out_dir",
    "max_drop", required=["tflite", "model"],
    enum_values={"runtime": list(runtimes.RUNTIMES), "decode": ["dark", "quarter", "argmax"]},
    defaults={"max_drop": parity_gate.DEFAULT_MAX_DROP_POINTS},
    help_notes={"model": "Here: the float model the file came from.",
                "out_dir": "Default: MODEL/parity for a run directory."})
del flags


def _print_difference(ev: stages.Evaluation, rep: dict) -> None:
    """The paired-bootstrap interval of the score difference (COCO: over images)."""
    if not ev.metric.image_bootstrap:
        print("(no bootstrap interval: it resamples COCO images; PCKh compares the same "
              "persons directly)")
        return
    tables = bootstrap.load_match_tables(
        ev.ann_file, {"tflite": rep["results_file"], "float": rep["float_results_file"]})
    print(bootstrap.format_difference(
        "tflite", "float", bootstrap.paired_ap_difference(tables["tflite"], tables["float"])))


def main(argv):
    del argv
    tflite, model = FLAGS["tflite"].value, FLAGS["model"].value
    if not os.path.isfile(tflite) or not tflite.endswith(".tflite"):
        raise cli.BadInput(f"--tflite={tflite}: expected a .tflite file")
    out_dir = FLAGS["out_dir"].value
    if out_dir is None:
        if not os.path.isdir(model):
            raise cli.BadInput("--out_dir is needed when --model is a model file")
        out_dir = rundir.parity_dir(model)
    data = stages.eval_data(model, FLAGS["ann_file"].value, FLAGS["image_dir"].value,
                            FLAGS["det_file"].value, FLAGS["det_score_threshold"].value)
    label = os.path.splitext(os.path.basename(tflite))[0]
    runtime = FLAGS["runtime"].value
    t0 = time.perf_counter()
    ev = stages.evaluate({label: tflite}, model, out_dir, data, runtime,
                         FLAGS["num_threads"].value, FLAGS["flip_test"].value,
                         FLAGS["decode"].value, FLAGS["batch_size"].value,
                         FLAGS["head_boxes_mat"].value)
    rep = ev.reports[label]
    seconds = time.perf_counter() - t0
    print(f"evaluated {len(ev.instances)} crops (float + TFLite on {runtime}) in "
          f"{seconds:.1f} s: {len(ev.instances) / max(seconds, 1e-9):.1f} crops/s")
    print(ev.metric.format_stats(rep["float_stats"], f"float model {model}"))
    print(ev.metric.format_stats(rep["stats"], f"{tflite} on {runtime}"))
    print(parity.format_parity({label: rep}))
    _print_difference(ev, rep)
    print(f"{ev.metric.name} {100 * rep['candidate_score']:.2f} ({tflite} on {runtime}); "
          f"float {100 * rep['reference_score']:.2f}")
    print(f"parity report: {os.path.join(out_dir, label, 'parity.json')}")
    try:
        print(parity_gate.check_drop(rep["reference_score"], rep["candidate_score"],
                                     FLAGS["max_drop"].value, f"{tflite} on {runtime}",
                                     model, ev.metric.name))
    except parity_gate.ParityError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError, runtimes.RuntimeUnavailable))
