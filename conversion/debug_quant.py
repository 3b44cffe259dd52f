"""Per-layer quantization report of a float model (TFLite's QuantizationDebugger).

    python -m conversion.debug_quant --model=MODEL_DIR_OR_KERAS --out_dir=DIR \
        [--float_layers=N] [--num_calibration=200] [--num_threads=2]

Calibrates full-integer PTQ on eval crops (the training set of --model's config, or
--calib_ann_file/--calib_image_dir), compares every int8 layer output with the float output
of the same input, writes DIR/layer_stats.csv (one row per quantized layer, worst RMSE/scale
first) and DIR/layer_stats.png, and prints the five worst layers. With --float_layers=N it
also writes the file with the N worst layers kept in float and prints its AP, size and
latency beside the full-int8 file's (validation set of the config, or --ann_file and
--image_dir).
"""

import os

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.data import datasets
from fptflite.evaluation import parity
from fptflite.tasks import configs
from fptflite.tasks.calibration import calibration_crops_for
from fptflite.tflite import debug, parity_gate
from fptflite.utils import cli

_MODEL = cli.flag("model")
_OUT = cli.flag("out_dir")
_FLOAT_LAYERS = flags.DEFINE_integer("float_layers", 0, "Keep this many worst layers in float "
                                     "and compare the mixed file with full int8 (0: no).")
_NUM_CALIB = cli.flag("num_calibration", default=datasets.DEFAULT_NUM_CALIBRATION)
_CALIB_ANN = cli.flag("calib_ann_file")
_CALIB_IMG = cli.flag("calib_image_dir")
_ANN = cli.flag("ann_file")
_IMAGES = cli.flag("image_dir")
_THREADS = cli.flag("num_threads")
_TOP = flags.DEFINE_integer("top", 5, "Worst layers to print.")
flags.mark_flags_as_required(["model", "out_dir"])


def _val_split(model_arg: str, input_size) -> tuple[list, str]:
    """Validation persons and their annotation file: the flags, else the run's val split."""
    h, w = input_size
    if _ANN.value or _IMAGES.value:
        if not (_ANN.value and _IMAGES.value):
            raise app.UsageError("give both --ann_file and --image_dir")
        return datasets.load_file(_ANN.value, _IMAGES.value, w / h)[0], _ANN.value
    if not os.path.isdir(model_arg):
        raise app.UsageError("--float_layers needs --ann_file and --image_dir (or a "
                             "training dir)")
    data = configs.load_config(model_arg).data
    return datasets.load_split(data, "val", w / h)[0], data.paths()["val_ann"]


def main(argv):
    del argv
    path = rundir.resolve_model(_MODEL.value)
    model = parity_gate.load_float_reference(path)
    h, w = (int(d) for d in model.input_shape[1:3])
    crops = calibration_crops_for(_MODEL.value, _CALIB_ANN.value, _CALIB_IMG.value, (h, w),
                                  _NUM_CALIB.value)
    rows, debugger = debug.report(model, crops, _OUT.value, path)
    print(debug.format_worst(rows, _TOP.value))
    print(f"written: {os.path.join(_OUT.value, 'layer_stats.csv')}, "
          f"{os.path.join(_OUT.value, 'layer_stats.png')}")
    if _FLOAT_LAYERS.value:
        val, val_ann = _val_split(_MODEL.value, (h, w))
        files = debug.write_mixed_models(debugger, rows, _FLOAT_LAYERS.value, _OUT.value,
                                         model.name)
        table = parity.compare_mixed({"int8": files["int8"],
                                      f"int8 + {_FLOAT_LAYERS.value} float": files["mixed"]},
                                     model, val, val_ann, _OUT.value, _THREADS.value)
        print(parity.format_mixed(table))
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
