"""Trains a zoo model: python -m training.train --config=NAME --model_dir=DIR [--data_dir=...].

Re-running the same command resumes from the last checkpoint in --model_dir.
"""

import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.tasks import configs, trainer

_CONFIG = flags.DEFINE_string("config", None, f"One of {sorted(configs.CONFIGS)}.")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Checkpoints, logs and exports go here.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset root (see DataConfig.layout).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Override the number of epochs.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Override the batch size per replica.")
_SET = flags.DEFINE_multi_string("set", [], "Config override key=value, e.g. "
                                 "--set=learning_rate=5e-4 --set=data.use_detections=true.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                              "tf.distribute strategy (multi_worker reads TF_CONFIG).")
_CPU_REPLICAS = flags.DEFINE_integer(
    "cpu_replicas", 0, "With --strategy=mirrored: run N replicas on N logical CPU devices "
    "(multi-replica runs and tests without GPUs). 0: the strategy's own devices.")
_MIXED = flags.DEFINE_bool("mixed_precision", None, "mixed_float16 (for GPUs).")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Enable TF op determinism.")
_KILL = flags.DEFINE_integer("kill_after_steps", 0, "Fault injection for crash-recovery "
                             "tests: SIGKILL the process after N optimizer steps.")
flags.mark_flags_as_required(["config", "model_dir"])


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
    strategy = trainer.make_strategy(_STRATEGY.value, _CPU_REPLICAS.value)
    cfg = configs.get_config(_CONFIG.value)
    cfg = configs.apply_overrides(cfg, flag_overrides(
        [("data.data_dir", _DATA_DIR), ("epochs", _EPOCHS), ("batch_size_per_replica", _BATCH),
         ("mixed_precision", _MIXED)]) + list(_SET.value))
    trainer.train(cfg, _MODEL_DIR.value, strategy, deterministic=_DETERMINISTIC.value,
                  kill_after_steps=_KILL.value)
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
