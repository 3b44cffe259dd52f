"""The QAT model of a float run, in RUN/qat (a run directory of its own).

    python -m conversion.qat --model=RUN [--epochs=0] [--learning_rate=...]

With the default 0 epochs (measured best on the demo, docs/quantization.md) the run's best
export is wrapped for quantization-aware training the way the converter will quantize it,
with activation ranges calibrated on eval crops of the training set, and saved as
RUN/qat/best.h5 beside its config.json. With --epochs > 0 it is fine-tuned with the trainer
(same data pipeline, checkpoints and resume; peak learning rate 1/100 of the float run's
unless given). Re-running the command resumes.
"""


import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.tasks import stages, trainer
from fptflite.utils import cli

FLAGS = cli.define("model", "epochs", "learning_rate", "set", "strategy", "deterministic",
                   required=["model"],
                   enum_values={"strategy": ["default", "mirrored", "multi_worker"]},
                   help_notes={"model": "Here: the float run directory (QAT goes to "
                                        "MODEL/qat).",
                               "epochs": f"QAT default: {stages.DEFAULT_QAT_EPOCHS} "
                                         "(calibrated ranges, no fine-tuning).",
                               "learning_rate": "QAT default: 1/100 of the float run's."})

def main(argv):
    del argv
    epochs = FLAGS["epochs"].value
    path = stages.qat(FLAGS["model"].value,
                      stages.DEFAULT_QAT_EPOCHS if epochs is None else epochs,
                      FLAGS["learning_rate"].value, FLAGS["set"].value,
                      trainer.make_strategy(FLAGS["strategy"].value),
                      FLAGS["deterministic"].value)
    print(f"QAT model: {path}")
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
