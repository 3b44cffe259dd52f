"""fptflite: train FasterPose in Keras and ship it as an int8 TensorFlow Lite model.

The package builds, trains and saves models with the Keras 2 API (``tf_keras``), imported as
such everywhere, never through ``tf.keras``; tensorflow-model-optimization needs Keras 2 too
and takes ``tf_keras`` itself when ``tf.keras`` is Keras 3. So the order of imports does not
matter: a script may import TensorFlow before fptflite (the project's isort order puts
``import tensorflow`` first), and gets the same models and the same .tflite bytes
(tests/test_imports.py). This module is the single place where ``TF_USE_LEGACY_KERAS`` is set,
so that ``tf.keras`` is ``tf_keras`` too when fptflite is imported first.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
