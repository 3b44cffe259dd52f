"""Converts a trained model to .tflite files, each audited, with sidecar metadata.

    python -m conversion.convert --model=RUN_OR_KERAS [--out_dir=RUN/tflite] \
        [--formats=float32,float16,int8_ptq,int8_qat] [--input_type=uint8] [--output_type=uint8]

--model is a float run directory (its best export; int8_qat uses RUN/qat, and the files go to
RUN/tflite unless --out_dir says otherwise) or a float .keras file (give --qat_model for
int8_qat, and --out_dir). With the default --formats, int8_qat is skipped (with the reason)
when no QAT model exists; a format asked for explicitly that cannot be made is an error. PTQ
calibrates on eval-preprocessed crops of the training set (200 by default), never on augmented
ones. Every int8_qat file is compared with the Keras QAT model it came from on the run's
validation crops (heatmap correlation, mean keypoint shift; printed and written to
NAME_int8_qat.fidelity.json). Each file's sidecar records the run's evaluation settings and
its audit whether every op stays on LiteRT's GPU accelerator.
"""


from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.data import datasets
from fptflite.tasks import stages
from fptflite.tflite import convert as convert_lib
from fptflite.utils import cli

FLAGS = cli.define("model", "qat_model", "out_dir", "formats", "calib_ann_file",
                   "calib_image_dir", "num_calibration", required=["model"],
                   defaults={"num_calibration": datasets.DEFAULT_NUM_CALIBRATION},
                   help_notes={"out_dir": "Default: MODEL/tflite for a run directory.",
                               "formats": f"Default: {','.join(stages.DEFAULT_FORMATS)}."})
_IN_TYPE = flags.DEFINE_enum("input_type", "uint8", ["uint8", "int8", "float32"],
                             "Input tensor type of int8 files.")
_OUT_TYPE = flags.DEFINE_enum("output_type", "uint8", ["uint8", "int8", "float32"],
                              "Heatmap output type of int8 files.")
_NAME = flags.DEFINE_string("name", None, "File name stem (default: the model's name).")


def main(argv):
    del argv
    formats = FLAGS["formats"].value
    for fmt in formats or ():
        if fmt not in convert_lib.FORMATS:
            raise cli.BadInput(f"--formats: unknown format {fmt!r}, one of "
                               f"{', '.join(convert_lib.FORMATS)}")
    done = stages.convert(FLAGS["model"].value, FLAGS["out_dir"].value, formats,
                          FLAGS["qat_model"].value, _NAME.value,
                          FLAGS["calib_ann_file"].value, FLAGS["calib_image_dir"].value,
                          FLAGS["num_calibration"].value, _IN_TYPE.value, _OUT_TYPE.value)
    for fmt, entry in done.files.items():
        print(f"{fmt}: {entry['path']}")
    print(f"converted: {', '.join(done.files)}")
    for fmt, reason in done.skipped.items():
        print(f"skipped {fmt}: {reason}")
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
