"""fptflite: train FasterPose in Keras and ship it as an int8 TensorFlow Lite model.

Importing any part of this package selects the Keras 2 API (``tf_keras``): this module is
the single place where ``TF_USE_LEGACY_KERAS`` is set, and it must run before TensorFlow is
imported (tensorflow-model-optimization only works with ``tf_keras``).
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "fptflite must be imported before tensorflow: it sets TF_USE_LEGACY_KERAS=1 so that "
        "tf.keras is tf_keras (Keras 2), which tensorflow-model-optimization requires."
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
