"""QAT fidelity from random weights: the Keras QAT model against its own int8 file.

    python benchmarks/qat_fidelity.py --model_dir=runs/demo/float --out_dir=DIR \\
        [--model=fasterpose_mnv2] [--steps=300] [--learning_rate=5e-3] [--bn=settled,initial]

Run it where the float run's data paths resolve (the repo root for runs/demo). For each BN
mode (``settled``: statistics averaged over training crops first; ``initial``: mean 0 /
variance 1) it builds the model at random, fine-tunes it with QAT for at least ``--steps``
steps, converts it to int8 and prints a table row: the random model's head input std and
heatmap range in int8 steps, the QAT steps, heatmap correlation and mean keypoint shift
against the file, and the model's own 1-ulp floor. Logic: ``fptflite.tasks.qat_fidelity``.
"""

from __future__ import annotations

import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.tasks import qat_fidelity
from fptflite.utils import cli

_MODEL_DIR = cli.flag("model")
_OUT = cli.flag("out_dir")
_MODEL = cli.flag("zoo_model", default="fasterpose_mnv2")
_STEPS = flags.DEFINE_integer("steps", 300, "Minimum QAT steps (rounded up to whole epochs).")
_LR = cli.flag("learning_rate", default=5e-3, help_note="Here: the QAT peak (cosine).")
_BN = flags.DEFINE_list("bn", ["settled"], f"BN modes: {', '.join(qat_fidelity.BN_MODES)}.")
_SEED = cli.flag("seed")
flags.mark_flags_as_required(["model", "out_dir"])


def main(argv):
    del argv
    rows = qat_fidelity.run(_MODEL_DIR.value, _OUT.value, _MODEL.value, _BN.value,
                            _STEPS.value, _LR.value, _SEED.value)
    print(qat_fidelity.format_table(rows, _MODEL.value, _LR.value))
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
