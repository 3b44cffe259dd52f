"""Backbones from keras.applications, built flat into the caller's functional graph.

Flat (not nested) models matter: tfmot's ``quantize_annotate_model`` rejects nested models.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras
from absl import logging

from fptflite.models.layers import ImageNormalization


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its stride-16 / stride-32 features are.

    Attributes:
        family: "resnet" or "mobilenet_v2".
        constructor: the keras.applications constructor.
        stride16_layer: name of the last layer at stride 16.
        stride32_layer: name of the last layer at stride 32 (the LR features).
        mean: RGB mean in pixel units expected by keras.applications weights.
        std: RGB std in pixel units expected by keras.applications weights.
        alpha: MobileNetV2 width multiplier (None for ResNets).
    """

    family: str
    constructor: Callable[..., keras.Model]
    stride16_layer: str
    stride32_layer: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alpha: float | None = None


# keras.applications ResNet v1 weights use caffe preprocessing (BGR, mean only). We feed RGB
# and flip the first convolution's input channels when loading such a file (see load_weights).
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
_UNIT_STD = (1.0, 1.0, 1.0)
_MOBILENET_MEAN = (127.5, 127.5, 127.5)
_MOBILENET_STD = (127.5, 127.5, 127.5)

BACKBONES: dict[str, BackboneSpec] = {
    "r50": BackboneSpec("resnet", keras.applications.ResNet50, "conv4_block6_out",
                        "conv5_block3_out", _CAFFE_MEAN_RGB, _UNIT_STD),
    "r101": BackboneSpec("resnet", keras.applications.ResNet101, "conv4_block23_out",
                         "conv5_block3_out", _CAFFE_MEAN_RGB, _UNIT_STD),
    "r152": BackboneSpec("resnet", keras.applications.ResNet152, "conv4_block36_out",
                         "conv5_block3_out", _CAFFE_MEAN_RGB, _UNIT_STD),
    "mnv2": BackboneSpec("mobilenet_v2", keras.applications.MobileNetV2, "block_13_expand_relu",
                         "out_relu", _MOBILENET_MEAN, _MOBILENET_STD, alpha=1.0),
    "mnv2_050": BackboneSpec("mobilenet_v2", keras.applications.MobileNetV2,
                             "block_13_expand_relu", "out_relu", _MOBILENET_MEAN,
                             _MOBILENET_STD, alpha=0.5),
    "mnv2_035": BackboneSpec("mobilenet_v2", keras.applications.MobileNetV2,
                             "block_13_expand_relu", "out_relu", _MOBILENET_MEAN,
                             _MOBILENET_STD, alpha=0.35),
}


def build_backbone(
    key: str,
    image: tf.Tensor,
    feature_stride: int = 32,
    weights: str | None = None,
) -> tf.Tensor:
    """Builds a backbone on ``image`` and returns its feature tensor.

    Args:
        key: a key of ``BACKBONES``.
        image: Keras input [N, H, W, 3], RGB pixels in [0, 255].
        feature_stride: 32 (LR features) or 16.
        weights: None (random init), "imagenet" (download), or a local keras.applications
            ``.h5`` weights file.

    Returns:
        Features [N, H/stride, W/stride, C].
    """
    spec = BACKBONES[key]
    if feature_stride not in (16, 32):
        raise ValueError(f"feature_stride must be 16 or 32, got {feature_stride}")
    x = ImageNormalization(spec.mean, spec.std, name="image_normalization")(image)
    kwargs = dict(include_top=False, weights=None, input_tensor=x)
    if spec.alpha is not None:
        kwargs["alpha"] = spec.alpha
    if weights == "imagenet":
        kwargs["weights"] = "imagenet"
    app = spec.constructor(**kwargs)
    if weights is None:
        logging.warning(
            "backbone %s: RANDOM INITIALISATION (no backbone_weights given; ignore this when "
            "init_from loads a trained model next). Fine for the synthetic demo; on COCO the "
            "paper's AP needs ImageNet weights: set "
            "backbone_weights to a local keras.applications no-top .h5 file (or 'imagenet' "
            "where downloads work), e.g. --set=backbone_weights=/path/to/weights.h5", key)
    elif weights == "imagenet":
        logging.info("backbone %s: ImageNet weights from keras.applications", key)
        _flip_first_conv_if_caffe(app, spec)
    else:
        load_weights(app, spec, weights)
    layer = spec.stride32_layer if feature_stride == 32 else spec.stride16_layer
    return app.get_layer(layer).output


def _flip_first_conv_if_caffe(app: keras.Model, spec: BackboneSpec) -> None:
    """Turns a BGR-trained first conv into an RGB one (keras ResNet v1 weights are BGR)."""
    if spec.family != "resnet":
        return
    conv = app.get_layer("conv1_conv")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel[:, :, ::-1, :], bias])


def load_weights(app: keras.Model, spec: BackboneSpec, path: str) -> None:
    """Loads a local keras.applications weights file (``.h5``, no top) into ``app`` by name.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read as Keras weights, or matches no layer.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    before = [w.numpy().copy() for w in app.weights[:1]]
    try:
        app.load_weights(path, by_name=True, skip_mismatch=False)
    except Exception as e:  # h5py and Keras raise a variety of types here
        raise ValueError(f"cannot load backbone weights from {path}: {e}") from e
    if before and (app.weights[0].numpy() == before[0]).all():
        raise ValueError(f"backbone weights file {path} matched no layer of the backbone")
    _flip_first_conv_if_caffe(app, spec)
    logging.info("backbone: loaded weights from %s", path)
