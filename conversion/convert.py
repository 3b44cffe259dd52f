"""Converts a trained model to .tflite files, each audited, with sidecar metadata.

    python -m conversion.convert --model=MODEL_DIR_OR_FILE --out_dir=DIR \
        --formats=float32,float16,int8_ptq,int8_qat [--input_type=uint8] [--output_type=uint8]

--model is a float training dir (its best export; int8_qat then uses DIR/qat) or a float
.keras file (give --qat_model for int8_qat). With the default --formats, int8_qat is skipped
(with a warning and a "skipped" line) when no QAT model exists; a format asked for
explicitly that cannot be made is an error. PTQ calibrates on eval-preprocessed crops of the
training set (200 by default), never on augmented ones. Every int8_qat file is compared with
the Keras QAT model it came from on the same eval crops (heatmap correlation, mean keypoint
shift in crop pixels; printed and written to NAME_int8_qat.fidelity.json).
"""

import os
import sys

from absl import app, flags, logging

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.data import datasets
from fptflite.evaluation import fidelity
from fptflite.tasks import eval_settings, trainer
from fptflite.tasks.calibration import calibration_crops_for
from fptflite.tflite import convert as convert_lib
from fptflite.tflite import metadata, runtimes
from fptflite.tflite.export import export_formats
from fptflite.utils.io import write_json_atomic

_MODEL = flags.DEFINE_string("model", None, "Float training dir or float .keras file.")
_QAT = flags.DEFINE_string("qat_model", None, "QAT .h5 file or QAT training dir "
                           "(default: MODEL/qat when --model is a dir).")
_OUT = flags.DEFINE_string("out_dir", None, "Output folder.")
_FORMATS = flags.DEFINE_list("formats", ["float32", "float16", "int8_ptq", "int8_qat"],
                             f"Any of {convert_lib.FORMATS}.")
_IN_TYPE = flags.DEFINE_enum("input_type", "uint8", ["uint8", "int8", "float32"],
                             "Input tensor type of int8 files.")
_OUT_TYPE = flags.DEFINE_enum("output_type", "uint8", ["uint8", "int8", "float32"],
                              "Heatmap output type of int8 files.")
_CALIB_ANN = flags.DEFINE_string("calib_ann_file", None, "Calibration annotations (default: "
                                 "the training set of --model's config).")
_CALIB_IMG = flags.DEFINE_string("calib_image_dir", None, "Calibration images.")
_NUM_CALIB = flags.DEFINE_integer("num_calibration", datasets.DEFAULT_NUM_CALIBRATION,
                                  "Calibration crops.")
_NAME = flags.DEFINE_string("name", None, "File name stem (default: the model's name).")
flags.mark_flags_as_required(["model", "out_dir"])


def _resolve(path: str) -> str:
    return trainer.best_export(path) if os.path.isdir(path) else path


def _missing_qat(qat_path: str | None) -> str | None:
    """Why no QAT model can be converted from ``qat_path`` (None: it can)."""
    if not qat_path:
        return "no QAT model: give --qat_model (a QAT .h5 or QAT training dir)"
    if os.path.isfile(qat_path):
        return None
    if not os.path.isdir(qat_path):
        return f"no QAT run at {qat_path} (run conversion.qat, or give --qat_model)"
    try:
        trainer.best_export(qat_path)
    except FileNotFoundError as e:
        return f"the QAT run in {qat_path} has no export: {e}"
    return None


def _record_eval_settings(exported: dict, float_path: str) -> None:
    """Adds the training config's evaluation settings (flip test, decoder) to each sidecar,
    so conversion.evaluate_tflite scores the file as the run scored its float model."""
    cfg, cfg_path = eval_settings.find_config(float_path)
    if cfg is None:
        return
    for entry in exported.values():
        meta = metadata.read_metadata(entry["path"])
        if meta is not None:
            meta["evaluation"] = {"flip_test": cfg.eval_flip_test, "decode": cfg.eval_decode,
                                  "from": cfg_path}
            metadata.write_metadata(entry["path"], meta)


def _record_gpu_residency(exported: dict) -> None:
    """Runs each file on LiteRT's GPU accelerator: whether every op stays on the GPU, written
    into its .audit.json and printed (or why the accelerator could not run here)."""
    for fmt, entry in exported.items():
        residency = runtimes.gpu_residency(entry["path"])
        entry["audit"]["gpu_residency"] = residency
        write_json_atomic(os.path.splitext(entry["path"])[0] + ".audit.json", entry["audit"])
        if not residency["checked"]:
            print(f"{fmt}: GPU residency not checked: {residency['reason']}")
        else:
            print(f"{fmt}: LiteRT GPU accelerator: " + (
                "every op on the GPU" if residency["fully_accelerated"]
                else f"ops stay on the CPU {residency['cpu_ops_log']}"))


def main(argv):
    del argv
    formats = list(_FORMATS.value)
    float_path = _resolve(_MODEL.value)
    float_model = convert_lib.load_for_format(float_path, "float32")
    qat_model = None
    skipped: dict[str, str] = {}
    if "int8_qat" in formats:
        qat_path = _QAT.value or (os.path.join(_MODEL.value, "qat")
                                  if os.path.isdir(_MODEL.value) else None)
        missing = _missing_qat(qat_path)
        if missing and (_QAT.value or _FORMATS.present):  # asked for explicitly: an error
            raise app.UsageError(f"int8_qat: {missing}")
        if missing:  # the default format list converts what exists
            skipped["int8_qat"] = missing
            formats.remove("int8_qat")
        else:
            qat_model = convert_lib.load_for_format(_resolve(qat_path), "int8_qat")
    for fmt, reason in skipped.items():
        logging.warning("skipping %s: %s", fmt, reason)
    calib = None
    if any(f.startswith("int8") for f in formats):
        calib = calibration_crops_for(_MODEL.value, _CALIB_ANN.value, _CALIB_IMG.value,
                                      float_model.input_shape[1:3], _NUM_CALIB.value)
    exported = export_formats(_OUT.value, _NAME.value or float_model.name, formats, float_model,
                              qat_model, calib, _IN_TYPE.value, _OUT_TYPE.value)
    if "int8_qat" in exported:
        fidelity.check_qat_file(qat_model, exported["int8_qat"]["path"],
                                calib[:fidelity.DEFAULT_NUM_FIDELITY_CROPS])
    _record_eval_settings(exported, float_path)
    _record_gpu_residency(exported)
    print(f"converted: {', '.join(formats)}")
    for fmt, reason in skipped.items():
        print(f"skipped {fmt}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
