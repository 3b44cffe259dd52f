"""The whole main job on the embedded synthetic data (what ``make demo`` runs).

    python -m conversion.demo --out_dir=runs/demo

synthetic data -> train (demo config) -> QAT -> float32 / int8 PTQ / int8 QAT .tflite ->
float vs int8 evaluation with the LiteRT interpreter. Writes report.json, report.md and PNG
pictures into --out_dir and prints the parity table. Re-running resumes finished stages.
"""

import os
import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.evaluation import parity
from fptflite.tasks import main_job
from fptflite.tflite import parity_gate

_OUT = flags.DEFINE_string("out_dir", "runs/demo", "Output folder.")
_CONFIG = flags.DEFINE_string("config", "demo", "Training config.")
_DATA = flags.DEFINE_string("data_dir", None, "Dataset dir (default OUT_DIR/data).")
_SET = flags.DEFINE_multi_string("set", [], "Config overrides key=value.")
_DEFAULTS = main_job.MainJobOptions(out_dir="")
_QAT_EPOCHS = flags.DEFINE_integer("qat_epochs", _DEFAULTS.qat_epochs,
                                   "QAT epochs (default chosen by measurement, see "
                                   "docs/quantization.md).")
_QAT_LR = flags.DEFINE_float("qat_learning_rate", _DEFAULTS.qat_learning_rate,
                             "QAT peak learning rate (default chosen by measurement).")
_MAX_DROP = flags.DEFINE_float("max_ap_drop", _DEFAULTS.max_ap_drop,
                               "Fail (nothing shipped) when the shipped int8 file's AP is more "
                               "than this many AP points below the float model's.")
_THREADS = flags.DEFINE_integer("num_threads", None, "Interpreter threads.")
_ASSETS = flags.DEFINE_string(
    "android_assets_dir",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 "android_demo_assets"),
    "Where the int8 model and its metadata are copied for the Android demo ('' to skip).")


def main(argv):
    del argv
    try:
        report = main_job.run(main_job.MainJobOptions(
            out_dir=_OUT.value, config=_CONFIG.value, data_dir=_DATA.value,
            overrides=tuple(_SET.value), qat_epochs=_QAT_EPOCHS.value,
            qat_learning_rate=_QAT_LR.value, max_ap_drop=_MAX_DROP.value,
            num_threads=_THREADS.value, android_assets_dir=_ASSETS.value or None))
    except parity_gate.ParityError as e:
        print(e, file=sys.stderr)
        return 1
    print("\n" + parity.format_parity(report["parity"]))
    print(f"\nfloat AP {100 * report['float_ap']:.1f} | int8 QAT AP "
          f"{100 * report['int8_qat_ap']:.1f} | int8 PTQ AP {100 * report['int8_ptq_ap']:.1f}"
          f" | total {report['timings_s']['total_s']:.0f} s")
    print(f"shipped {report['shipped']['format']}: {report['shipped']['reason']}\n"
          f"{report['shipped']['verdict']}")
    print(f"report: {os.path.join(_OUT.value, 'report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
