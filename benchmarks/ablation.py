"""The paper's claims as an ablation (RCE vs MSE; depth-to-space head vs deconvolutions).

    python benchmarks/ablation.py --budget_minutes=30 --out_dir=DIR [--seed=0] [--epochs=N]

Trains every variant of ``fptflite.tasks.ablation`` on the same synthetic COCO data; writes
ablation.json, ablation.md and convergence.png into --out_dir and prints the table.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import fptflite  # noqa: E402,F401  (selects tf_keras before TensorFlow loads)
from fptflite.tasks import ablation  # noqa: E402

_OUT = flags.DEFINE_string("out_dir", None, "Results (and the generated data) go here.",
                           required=True)
_BUDGET = flags.DEFINE_float("budget_minutes", 30.0, "The whole run should fit this; it "
                             "picks the number of epochs.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Force the number of epochs (ignores budget).")
_SEED = flags.DEFINE_integer("seed", 0, "Training seed (initial weights, data order).")
_VARIANTS = flags.DEFINE_list("variants", [v.name for v in ablation.VARIANTS],
                              "Variants to train.")


def main(argv):
    del argv
    settings = ablation.settings_with(seed=_SEED.value, variants=_VARIANTS.value)
    result = ablation.run(_OUT.value, _BUDGET.value, settings, _EPOCHS.value)
    print(ablation.format_table(result))
    print(f"total {result['total_s']:.0f} s for a {_BUDGET.value:g} min budget; "
          f"wrote {_OUT.value}/ablation.{{md,json}} and convergence.png")


if __name__ == "__main__":
    app.run(main)
