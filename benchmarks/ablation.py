"""The paper's claims as a multi-seed ablation (RCE vs MSE; depth-to-space head vs deconvs).

    python -m benchmarks.ablation --out_dir=DIR --budget_minutes=240 [--recipe=demo]
        [--variants=fasterpose_rce,fasterpose_rce:learning_rate=0.01,...] [--seeds=0,1,2]
        [--epochs=N] [--set=key=value ...]

Trains every (arm, seed) of ``fptflite.tasks.ablation`` with the one ``Trainer`` in
DIR/runs/, resumes a killed study, never retrains a finished run, and writes ablation.json,
ablation.md and convergence.png into --out_dir; prints the table and the verdicts.
"""


from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.tasks import ablation
from fptflite.utils import cli

_OUT = cli.flag("out_dir")
_BUDGET = flags.DEFINE_float("budget_minutes", None, "The study should fit this; a seed "
                             "round starts only if its estimated cost fits (default: no limit).")
_RECIPE = flags.DEFINE_string("recipe", "demo", "Base config (fptflite.tasks.configs).")
_VARIANTS = flags.DEFINE_list(
    "variants", list(ablation.DEFAULT_ARMS), "Arms to train: a variant of "
    "fptflite.tasks.ablation.VARIANTS, optionally with config overrides of its own, "
    "variant:key=value[:key=value] (e.g. fasterpose_rce:learning_rate=0.01:epochs=68).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds (initial weights, data "
                           "order), run in this order while the budget lasts.")
_EPOCHS = cli.flag("epochs")
_SET = cli.flag("set")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 30, "Timed int8 invocations per thread "
                                     "count, per run and in the closing side-by-side timing.")


def main(argv):
    del argv
    result = ablation.run(ablation.AblationOptions(
        out_dir=_OUT.value, recipe=_RECIPE.value, variants=tuple(_VARIANTS.value),
        seeds=tuple(int(s) for s in _SEEDS.value), epochs=_EPOCHS.value,
        budget_minutes=_BUDGET.value, overrides=tuple(_SET.value),
        latency_runs=_LATENCY_RUNS.value))
    print(ablation.format_markdown(result))
    print(f"wrote {_OUT.value}/ablation.{{json,md}} and convergence.png "
          f"({result['session_s']:.0f} s this session)")


if __name__ == "__main__":
    app.run(main)
