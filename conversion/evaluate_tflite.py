"""Evaluation of a .tflite with the LiteRT interpreter (COCO AP or MPII PCKh, by the annotation
file), optionally against its float model.

    python -m conversion.evaluate_tflite --tflite=FILE --ann_file=... --image_dir=... \
        [--det_file=...] [--num_threads=2] [--compare_to=FLOAT_MODEL] --out_dir=DIR

Same preprocessing, decoding and COCOeval as training.evaluate; flip test, decoder and batch
size default to the .tflite sidecar's "evaluation" section, else the training config of
--compare_to (or beside the .tflite), else TrainConfig's defaults. Evaluation streams: memory
holds one batch of heatmaps and the decoded keypoints, whatever the number of boxes.

With --compare_to (a float .keras or training dir) it writes a parity report: both APs, the
AP delta with its paired-bootstrap confidence interval over the images, per-keypoint pixel
error between the two models on the same crops, heatmap correlation and parity.png, and
exits with status 1 (naming both APs) when the .tflite's AP is more than --max_ap_drop AP
points (default 0.5) below the float model's.
"""

import os
import sys
import time

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import datasets
from fptflite.evaluation import bootstrap, metrics, parity
from fptflite.tasks import eval_settings, trainer
from fptflite.tflite import parity_gate, runtimes
from fptflite.tflite.runner import TFLitePredictor

_TFLITE = flags.DEFINE_string("tflite", None, "The .tflite file.")
_ANN = flags.DEFINE_string("ann_file", None, "COCO person keypoints JSON or MPII JSON list.")
_IMAGES = flags.DEFINE_string("image_dir", None, "Folder of the images.")
_DET = flags.DEFINE_string("det_file", None, "Person detections JSON (else GT boxes).")
_DET_THR = flags.DEFINE_float("det_score_threshold", 0.0, "Minimum detection score.")
_HEAD_MAT = flags.DEFINE_string("head_boxes_mat", None, "MPII: gt_valid.mat with head boxes "
                                "(default: the records' head_box fields).")
_THREADS = flags.DEFINE_integer("num_threads", None, "Interpreter threads (default: all).")
_RUNTIME = flags.DEFINE_enum("runtime", "cpu", list(runtimes.RUNTIMES),
                             "Where the file runs: cpu (LiteRT + XNNPACK), cpu_reference "
                             "(LiteRT's own kernels), gpu (LiteRT's GPU accelerator), "
                             "tflite2.14 (TensorFlow Lite 2.14 in its own environment).")
_COMPARE = flags.DEFINE_string("compare_to", None, "Float model (.keras or training dir).")
_FLIP = flags.DEFINE_bool("flip_test", None, "Average with the flipped image's heatmaps "
                          "(default: the model's training config).")
_DECODE = flags.DEFINE_enum("decode", None, ["dark", "quarter", "argmax"],
                            "Decoder (default: the model's training config).")
_BATCH = flags.DEFINE_integer("batch_size", None, "Crops per interpreter call (default: the "
                              "config's eval batch size).")
_OUT = flags.DEFINE_string("out_dir", None, "Results go here.")
_MAX_DROP = flags.DEFINE_float(
    "max_ap_drop", parity_gate.DEFAULT_MAX_AP_DROP_POINTS,
    "With --compare_to: exit non-zero when the .tflite's AP (MPII: mean PCKh) is more than "
    "this many points below the float model's (negative: demand a gain).")
flags.mark_flags_as_required(["tflite", "ann_file", "image_dir", "out_dir"])


def _print_rate(num_crops: int, seconds: float, what: str = "TFLite") -> None:
    print(f"evaluated {num_crops} crops ({what}) in {seconds:.1f} s: "
          f"{num_crops / max(seconds, 1e-9):.1f} crops/s (prediction, decoding and COCOeval)")


def _load(input_size) -> tuple[list, metrics.Metric]:
    """The persons of --ann_file (COCO or MPII, by the file) and their metric."""
    h, w = input_size
    reader = datasets.file_reader(_ANN.value)
    instances, report = datasets.load_file(
        _ANN.value, _IMAGES.value, w / h, reader, det_file=_DET.value,
        det_score_threshold=_DET_THR.value, head_boxes_mat=_HEAD_MAT.value)
    print(f"{len(instances)} persons ({report.summary()}), {reader} annotations")
    return instances, metrics.get_metric(reader)


def _print_difference(metric: metrics.Metric, rep: dict) -> None:
    """The paired-bootstrap interval of the AP difference (COCO: over images)."""
    if not metric.image_bootstrap:
        print("(no bootstrap interval: it resamples COCO images; PCKh compares the same "
              "persons directly)")
        return
    tables = bootstrap.load_match_tables(
        _ANN.value, {"tflite": rep["results_file"], "float": rep["float_results_file"]})
    print(bootstrap.format_difference(
        "tflite", "float", bootstrap.paired_ap_difference(tables["tflite"], tables["float"])))


def main(argv):
    del argv
    try:
        predictor = TFLitePredictor(_TFLITE.value, num_threads=_THREADS.value,
                                    runtime=_RUNTIME.value)
    except runtimes.RuntimeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h, w = predictor.input_size
    instances, metric = _load((h, w))
    settings = eval_settings.resolve(_FLIP.value, _DECODE.value, _BATCH.value,
                                     [_COMPARE.value, _TFLITE.value], _TFLITE.value)
    print(f"decode {settings.decode}, flip test {settings.flip_test}, batch "
          f"{settings.batch_size} (flags, else {settings.source})")
    t0 = time.perf_counter()
    if not _COMPARE.value:
        stats, _ = metric.evaluate(predictor, instances, _ANN.value, (h, w), _OUT.value,
                                   settings.batch_size, settings.flip_test, settings.decode)
        print(metric.format_stats(stats, f"{_TFLITE.value}"))
        _print_rate(len(instances), time.perf_counter() - t0)
        return 0
    path = trainer.best_export(_COMPARE.value) if os.path.isdir(_COMPARE.value) \
        else _COMPARE.value
    float_model = parity_gate.load_float_reference(path)
    parity_gate.check_compatible(_TFLITE.value, float_model, path)
    t0 = time.perf_counter()
    rep = parity.evaluate_against_float(_TFLITE.value, float_model, instances, _ANN.value,
                                        _OUT.value, _THREADS.value, settings.batch_size,
                                        settings.flip_test, settings.decode, metric=metric,
                                        runtime=_RUNTIME.value)
    _print_rate(len(instances), time.perf_counter() - t0,
                f"float + TFLite on {_RUNTIME.value} on each crop")
    print(metric.format_stats(rep["float_stats"], f"float model {path}"))
    print(metric.format_stats(rep["stats"], f"{_TFLITE.value}"))
    print(parity.format_parity({os.path.basename(_TFLITE.value): rep}))
    _print_difference(metric, rep)
    print(f"parity report: {os.path.join(_OUT.value, 'parity.json')}, plot: "
          f"{os.path.join(_OUT.value, 'parity.png')}")
    try:
        print(parity_gate.check_ap_drop(rep["reference_ap"], rep["candidate_ap"],
                                        _MAX_DROP.value, f"{_TFLITE.value} on {_RUNTIME.value}",
                                        path, metric.name))
    except parity_gate.ParityError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
