"""One worker of the two-process MultiWorkerMirroredStrategy test.

Usage: python tests/helpers/multiworker_train.py DATA_DIR MODEL_DIR WEIGHTS_OUT.npz
(TF_CONFIG set by the test). Trains the tiny config and saves this worker's final weights.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fptflite  # noqa: E402,F401
from fptflite.tasks import configs, trainer  # noqa: E402


def main(data_dir: str, model_dir: str, out: str) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cfg = configs.get_config("demo")
    for key, value in (("data.data_dir", data_dir), ("model", "fasterpose_mnv2_035"),
                       ("input_size", "[64, 64]"), ("batch_size_per_replica", "4"),
                       ("epochs", "1"), ("eval_every_epochs", "0"),
                       ("eval_flip_test", "false")):
        cfg = configs.override(cfg, key, value)
    result = trainer.train(cfg, model_dir, strategy, deterministic=True)
    np.savez(out, *[w.numpy() for w in result.model.weights])


if __name__ == "__main__":
    main(*sys.argv[1:4])
