"""The order of imports does not matter: TensorFlow imported (and tf.keras loaded, as Keras 3)
before fptflite, as the project's isort order writes it, gives the same QAT model and the same
.tflite bytes as fptflite first."""

import hashlib
import os
import subprocess
import sys

import pytest

SCRIPT = """
import sys
if sys.argv[1] == "tensorflow_first":
    import tensorflow as tf
    tf.keras.Model  # loads tf.keras now: Keras 3, before fptflite sets TF_USE_LEGACY_KERAS
from fptflite import quantization
from fptflite.models import build_model
from fptflite.tflite import convert
import numpy as np
import tensorflow as tf
import tf_keras as keras
print("tf.keras", tf.keras.Model.__module__)
keras.utils.set_random_seed(0)
model = build_model("fasterpose_mnv2_035", (64, 64), 17, None, 16, 32)
crops = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
qat = quantization.quantize(model, crops)
sys.stdout.buffer.write(b"\\nFILES\\n" + convert.convert(qat, "int8_qat", crops))
"""


def _file(order: str) -> tuple[str, bytes]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}  # a new user
    done = subprocess.run([sys.executable, "-c", SCRIPT, order], capture_output=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    head, qat = done.stdout.split(b"\nFILES\n", 1)
    return head.decode().strip().splitlines()[-1], qat


@pytest.mark.slow
def test_tensorflow_imported_first_gives_the_same_files():
    keras_first, qat_a = _file("fptflite_first")
    keras_then, qat_b = _file("tensorflow_first")
    # The two processes really differ: tf.keras is tf_keras only when fptflite set the
    # variable before TensorFlow loaded (else Keras 3).
    assert keras_first.startswith("tf.keras tf_keras.") and \
        keras_then.startswith("tf.keras keras."), (keras_first, keras_then)
    assert len(qat_a) > 10_000
    assert hashlib.sha256(qat_a).digest() == hashlib.sha256(qat_b).digest()
