"""Trains a zoo model into a run directory.

    python -m training.train --config=NAME --run_dir=RUN [--data_dir=...] [--set=key=value]

Re-running the same command resumes from the last checkpoint in --run_dir (the layout every
other tool reads: fptflite.rundir).
"""


from absl import flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite import rundir
from fptflite.tasks import configs, trainer
from fptflite.utils import cli

FLAGS = cli.define("config", "run_dir", "data_dir", "epochs", "batch_size", "set", "strategy",
                   "deterministic", required=["config", "run_dir"],
                   enum_values={"strategy": ["default", "mirrored", "multi_worker"]},
                   help_notes={"config": f"One of {sorted(configs.CONFIGS)}.",
                               "batch_size": "Here: per replica."})
_CPU_REPLICAS = flags.DEFINE_integer(
    "cpu_replicas", 0, "With --strategy=mirrored: run N replicas on N logical CPU devices "
    "(multi-replica runs and tests without GPUs). 0: the strategy's own devices.")
_MIXED = flags.DEFINE_bool("mixed_precision", None, "mixed_float16 (for GPUs).")
_KILL = flags.DEFINE_integer("kill_after_steps", 0, "Fault injection for crash-recovery "
                             "tests: SIGKILL the process after N optimizer steps.")


def flag_overrides(pairs) -> list[str]:
    """key=value strings for the dedicated flags that were given."""
    out = []
    for key, flag in pairs:
        if flag.value is not None:
            value = str(flag.value).lower() if isinstance(flag.value, bool) else flag.value
            out.append(f"{key}={value}")
    return out


def main(argv):
    del argv
    # First: logical CPU devices must be configured before TensorFlow initialises devices.
    strategy = trainer.make_strategy(FLAGS["strategy"].value, _CPU_REPLICAS.value)
    cfg = configs.get_config(FLAGS["config"].value)
    cfg = configs.apply_overrides(cfg, flag_overrides(
        [("data.data_dir", FLAGS["data_dir"]), ("epochs", FLAGS["epochs"]),
         ("batch_size_per_replica", FLAGS["batch_size"]), ("mixed_precision", _MIXED)])
        + list(FLAGS["set"].value))
    trainer.train(cfg, FLAGS["run_dir"].value, strategy,
                  deterministic=FLAGS["deterministic"].value, kill_after_steps=_KILL.value)
    return 0


if __name__ == "__main__":
    cli.run_tool(main, (rundir.RunDirError,))
