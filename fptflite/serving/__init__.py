"""Serving: in-graph decoding, the Android drop-in export, and image/video prediction.

Modules that only run .tflite files (``app_pipeline``, ``tracking``, ``one_euro``,
``predictors``, ``video``) import numpy, OpenCV and LiteRT only, never TensorFlow.
"""
