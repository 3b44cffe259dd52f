"""The whole main job on the embedded synthetic data (what ``make demo`` runs).

    python -m conversion.demo --run_dir=runs/demo

synthetic data -> train (demo config) -> QAT -> float32 / float16 / int8 PTQ / int8 QAT .tflite
-> float vs file evaluation -> the shipped int8 file on every runtime -> Android drop-in. Each
step is the stage a command-line tool runs, on one run directory: afterwards README's commands
(conversion.qat, convert, evaluate_tflite, export_android) work on --run_dir. Writes
report.json, report.md and PNG pictures into --run_dir and prints the parity table.
Re-running resumes finished stages.
"""

import os
import sys

from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.evaluation import parity
from fptflite.tasks import main_job, stages
from fptflite.tflite import parity_gate
from fptflite.tflite.runtimes import RuntimeUnavailable
from fptflite.utils import cli

FLAGS = cli.define("run_dir", "config", "data_dir", "set", "max_drop", "num_threads",
                   defaults={"max_drop": parity_gate.DEFAULT_MAX_DROP_POINTS},
                   help_notes={"config": "Default: demo."})
_QAT_EPOCHS = flags.DEFINE_integer("qat_epochs", stages.DEFAULT_QAT_EPOCHS,
                                   "QAT epochs (conversion.qat's default, chosen by "
                                   "measurement: docs/quantization.md).")
_ASSETS = flags.DEFINE_string(
    "android_assets_dir",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 "android_demo_assets"),
    "Where the Android drop-in and its model card go ('' to skip).")


def main(argv):
    del argv
    run_dir = FLAGS["run_dir"].value or "runs/demo"
    try:
        report = main_job.run(main_job.MainJobOptions(
            run_dir=run_dir, config=FLAGS["config"].value or "demo",
            data_dir=FLAGS["data_dir"].value, overrides=tuple(FLAGS["set"].value),
            qat_epochs=_QAT_EPOCHS.value, max_drop=FLAGS["max_drop"].value,
            num_threads=FLAGS["num_threads"].value,
            android_assets_dir=_ASSETS.value or None))
    except parity_gate.ParityError as e:
        print(e, file=sys.stderr)
        return 1
    print("\n" + parity.format_parity(report["parity"]))
    metric = report["metric"]
    print(f"\nfloat {metric} {100 * report['float_score']:.1f} | int8 QAT "
          f"{100 * report['int8_qat_score']:.1f} | int8 PTQ {100 * report['int8_ptq_score']:.1f}"
          f" | total {report['timings_s']['total_s']:.0f} s")
    print(f"shipped {report['shipped']['format']}: {report['shipped']['reason']}\n"
          f"{report['shipped']['verdict']}")
    print(f"report: {os.path.join(run_dir, rundir.REPORT_MD)}")
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError, RuntimeUnavailable))
