"""Exports the Android drop-in model (in-graph decoding) with keypoints.txt and model_card.json.

    python -m conversion.export_android --model=MODEL_DIR_OR_KERAS --out_dir=android_demo_assets/ \
        [--int8=qat|ptq] [--qat_model=QAT_H5_OR_DIR] [--main_job_report=REPORT_JSON]

Writes fasterpose_singlepose.tflite, a drop-in replacement for movenet_lightning.tflite in the
TensorFlow Lite pose-estimation Android sample (see android_demo_assets/README.md). --int8=qat
uses the QAT model (default MODEL_DIR/qat), --int8=ptq calibrates the float model on eval crops
of the training set. The heatmap-output int8 file of the same body goes to --work_dir.
"""

import json
import os
import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import datasets
from fptflite.keypoints import NUM_KEYPOINTS
from fptflite.quantization.model_io import load_model
from fptflite.serving import android, dropin_build
from fptflite.tasks import trainer
from fptflite.tasks.calibration import calibration_crops_for

_MODEL = flags.DEFINE_string("model", None, "Float training dir or float .keras file.")
_OUT = flags.DEFINE_string("out_dir", "android_demo_assets", "Assets folder.")
_INT8 = flags.DEFINE_enum("int8", "qat", list(dropin_build.INT8_MODES), "Which int8 body.")
_QAT = flags.DEFINE_string("qat_model", None, "QAT .h5 or QAT training dir (default "
                           "MODEL/qat when --model is a dir).")
_WORK = flags.DEFINE_string("work_dir", None, "Where the heatmap-output int8 reference file "
                            "goes (default: --out_dir).")
_CALIB_ANN = flags.DEFINE_string("calib_ann_file", None, "Calibration annotations (default: "
                                 "the training set of --model's config).")
_CALIB_IMG = flags.DEFINE_string("calib_image_dir", None, "Calibration images.")
_NUM_CALIB = flags.DEFINE_integer("num_calibration", datasets.DEFAULT_NUM_CALIBRATION,
                                  "Calibration crops.")
_MIN_RUNTIME = flags.DEFINE_string(
    "min_runtime", "2.14", "The oldest TensorFlow Lite the file must load and run on (the "
    "Android pose sample's 2.14); 'none' skips the check.")
_REPORT = flags.DEFINE_string("main_job_report", None, "A main job report.json whose AP and "
                              "parity figures go into the model card.")
flags.mark_flags_as_required(["model"])


def _resolve(path: str) -> str:
    return trainer.best_export(path) if os.path.isdir(path) else path


def _measured(path: str, int8: str) -> dict:
    with open(path) as f:
        return android.measured_from_report(json.load(f), int8)


def main(argv):
    del argv
    source = _resolve(_MODEL.value)
    float_model = load_model(source)
    k = int(float_model.output_shape[-1])
    if k != NUM_KEYPOINTS:
        raise app.UsageError(
            f"{source} predicts {k} keypoints, but the Android drop-in replaces MoveNet, whose "
            f"contract is COCO's {NUM_KEYPOINTS} keypoints (an MPII model has 16): export a "
            "model trained on a COCO-layout dataset, or use conversion.convert for a plain "
            ".tflite")
    if _INT8.value == "qat":
        qat_path = _QAT.value or (os.path.join(_MODEL.value, "qat")
                                  if os.path.isdir(_MODEL.value) else None)
        if not qat_path:
            raise app.UsageError("--int8=qat needs --qat_model (a QAT .h5 or QAT training dir)")
        body = load_model(_resolve(qat_path))
    else:
        body = float_model
    calib = calibration_crops_for(_MODEL.value, _CALIB_ANN.value, _CALIB_IMG.value,
                                  float_model.input_shape[1:3], _NUM_CALIB.value)
    measured = _measured(_REPORT.value, _INT8.value) if _REPORT.value else \
        {"ap": None, "parity": None,
         "ap_note": "not measured here: pass --main_job_report (make demo fills it)"}
    card = android.export_android(
        body, _INT8.value, _OUT.value, calib, source, _WORK.value, measured,
        min_runtime=None if _MIN_RUNTIME.value == "none" else _MIN_RUNTIME.value)
    print(f"wrote {os.path.join(_OUT.value, android.DROPIN_FILENAME)} "
          f"({card['size_bytes'] / 1e6:.2f} MB, int8 {card['int8']}), keypoints.txt, "
          "model_card.json")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
