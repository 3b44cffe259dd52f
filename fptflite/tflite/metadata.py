"""The sidecar JSON that travels next to each .tflite: what an app needs to run it."""

from __future__ import annotations

import json
import os

import tf_keras as keras

from fptflite.codec import HEATMAP_STRIDE
from fptflite.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINT_NAMES, COCO_SKELETON
from fptflite.models.layers import ImageNormalization
from fptflite.utils.io import write_json_atomic


def sidecar_path(tflite_path: str) -> str:
    return os.path.splitext(tflite_path)[0] + ".json"


def build_metadata(model: keras.Model, fmt: str, audit_report: dict, model_name: str) -> dict:
    """Input size, normalisation, keypoints and tensor types of one converted model."""
    norm = [layer for layer in model.submodules if isinstance(layer, ImageNormalization)]
    h, w = (int(d) for d in model.input_shape[1:3])
    return {
        "model": model_name,
        "format": fmt,
        "input": {
            "height": h, "width": w, "channels": "RGB",
            "pixel_range": [0, 255],
            "normalization": ("inside the model: (x - mean) / std with mean "
                              f"{norm[0].mean} and std {norm[0].std}" if norm else "none"),
            "dtype": audit_report["input"]["dtype"],
            "quantization": audit_report["input"]["quantization"],
        },
        "output": {
            "heatmap_stride": HEATMAP_STRIDE,
            "shape": audit_report["output"]["shape"],
            "dtype": audit_report["output"]["dtype"],
            "quantization": audit_report["output"]["quantization"],
            "activation": "sigmoid" if "LOGISTIC" in audit_report["ops"] else "linear",
            "coordinate_mapping": "crop_xy = (heatmap_xy + 0.5) * stride - 0.5",
        },
        "keypoint_names": list(COCO_KEYPOINT_NAMES),
        "flip_pairs": [list(p) for p in COCO_FLIP_PAIRS],
        "skeleton": [list(e) for e in COCO_SKELETON],
        "crop": "person box grown to the input aspect ratio, x1.25, affine-warped (bilinear)",
    }


def write_metadata(tflite_path: str, metadata: dict) -> str:
    path = sidecar_path(tflite_path)
    write_json_atomic(path, metadata)
    return path


def read_metadata(tflite_path: str) -> dict | None:
    path = sidecar_path(tflite_path)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
