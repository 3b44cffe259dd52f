"""Exports the Android drop-in model (in-graph decoding) with keypoints.txt and model_card.json.

    python -m conversion.export_android --model=RUN_OR_KERAS [--out_dir=android_demo_assets] \
        [--int8=qat|ptq] [--qat_model=QAT_RUN_OR_H5] [--min_runtime=2.14]

Writes fasterpose_singlepose.tflite, a drop-in replacement for movenet_lightning.tflite in the
TensorFlow Lite pose-estimation Android sample (see android_demo_assets/README.md). --int8=qat
uses the QAT model (default RUN/qat), --int8=ptq calibrates the float model on eval crops of
the training set. With a run directory whose main job report exists (make demo writes
RUN/report.json), the card carries its scores and parity; the drop-in's keypoints on every
runtime are compared with the CPU's on the run's validation crops. The file must load and
run on TensorFlow Lite --min_runtime (the Android sample's 2.14): where that runtime is not
installed (make runtimes), the card says "not run" with the reason, unless --min_runtime was
given explicitly (then exit 2).
"""

import json
import os

from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.data import datasets
from fptflite.serving import android, dropin_build
from fptflite.tasks import stages
from fptflite.tflite.runtimes import RuntimeNotInstalled
from fptflite.utils import cli

FLAGS = cli.define("model", "qat_model", "out_dir", "calib_ann_file", "calib_image_dir",
                   "num_calibration", required=["model"],
                   defaults={"out_dir": "android_demo_assets",
                             "num_calibration": datasets.DEFAULT_NUM_CALIBRATION})
_INT8 = flags.DEFINE_enum("int8", "qat", list(dropin_build.INT8_MODES), "Which int8 body.")
_WORK = flags.DEFINE_string("work_dir", None, "Where the heatmap-output int8 reference file "
                            "goes (default: RUN/tflite for a run directory, else --out_dir).")
_MIN_RUNTIME = flags.DEFINE_string(
    "min_runtime", "2.14", "The oldest TensorFlow Lite the file must load and run on (the "
    "Android pose sample's 2.14); 'none' skips the check.")


def _measured(model: str, int8: str) -> dict | None:
    """The card's scores from the run's main job report, when there is one."""
    path = os.path.join(model, rundir.REPORT_JSON)
    if not os.path.isdir(model) or not os.path.isfile(path):
        return None
    with open(path) as f:
        report = json.load(f)
    if report["shipped"]["format"] != f"int8_{int8}":
        return None  # the report measured the other int8 body
    return android.measured_from_report(report, int8)


def main(argv):
    del argv
    model = FLAGS["model"].value
    work = _WORK.value or (rundir.tflite_dir(model) if os.path.isdir(model) else None)
    min_runtime = None if _MIN_RUNTIME.value == "none" else _MIN_RUNTIME.value
    try:
        card = stages.export_android(
            model, FLAGS["out_dir"].value, _INT8.value, FLAGS["qat_model"].value,
            FLAGS["calib_ann_file"].value, FLAGS["calib_image_dir"].value,
            FLAGS["num_calibration"].value, work, _measured(model, _INT8.value),
            min_runtime, min_runtime_required=_MIN_RUNTIME.present)
    except RuntimeNotInstalled as e:
        raise cli.BadInput(f"--min_runtime={_MIN_RUNTIME.value} was asked for: {e}") from e
    print(f"wrote {os.path.join(FLAGS['out_dir'].value, android.DROPIN_FILENAME)} "
          f"({card['size_bytes'] / 1e6:.2f} MB, int8 {card['int8']}), keypoints.txt, "
          "model_card.json")
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
