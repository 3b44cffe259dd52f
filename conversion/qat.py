"""Quantization-aware fine-tuning of a trained float model.

    python -m conversion.qat --model_dir=FLOAT_DIR [--qat_dir=FLOAT_DIR/qat] [--epochs=1]

Takes the float run's resolved config, initialises from its best export (the float weights
are verified to have reached the QAT model), wraps it with tfmot the way the converter will
quantize it (activation ranges calibrated on eval crops of the training set) and fine-tunes
with the same data pipeline, checkpoints and resume. Re-running the command resumes.
"""

import os
import sys

from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.tasks import configs, trainer

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The float training dir.")
_QAT_DIR = flags.DEFINE_string("qat_dir", None, "Where QAT runs (default MODEL_DIR/qat).")
_INIT = flags.DEFINE_string("init_from", None, "Float .keras to start from (default: the "
                            "training dir's best export).")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "QAT epochs (>= 1; the main job's default of 0 "
                               "epochs is calibration only).")
_LR = flags.DEFINE_float("learning_rate", None, "Peak learning rate (default: 1/100 of the "
                         "float run's).")
_SET = flags.DEFINE_multi_string("set", [], "More config overrides key=value.")
_STRATEGY = flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                              "tf.distribute strategy.")
_DETERMINISTIC = flags.DEFINE_bool("deterministic", False, "Enable TF op determinism.")
flags.mark_flags_as_required(["model_dir"])


def main(argv):
    del argv
    float_cfg = trainer.load_config(_MODEL_DIR.value)
    if float_cfg.quantize:
        raise ValueError(f"{_MODEL_DIR.value} is already a QAT run; give the float run's dir")
    init_from = _INIT.value or trainer.best_export(_MODEL_DIR.value)
    cfg = configs.qat_config(float_cfg, init_from, _EPOCHS.value, _LR.value, list(_SET.value))
    qat_dir = _QAT_DIR.value or os.path.join(_MODEL_DIR.value, "qat")
    trainer.train(cfg, qat_dir, trainer.make_strategy(_STRATEGY.value),
                  deterministic=_DETERMINISTIC.value)
    print(f"QAT model: {trainer.best_export(qat_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
