"""The model zoo: FasterPose (LR features + depth-to-space) and SimpleBaseline (deconvs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf
import tf_keras as keras

from fptflite.codec import HEATMAP_STRIDE, mean_target_logit
from fptflite.keypoints import NUM_KEYPOINTS
from fptflite.losses import OUTPUT_ACTIVATIONS
from fptflite.models.backbones import BACKBONES, build_backbone
from fptflite.models.layers import DepthToSpace


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One named model: which head on which backbone.

    Attributes:
        head: "fasterpose" (by default sigmoid heatmaps, RCE loss) or "simplebaseline" (by
            default linear, MSE).
        backbone: a key of ``fptflite.models.backbones.BACKBONES``.
        description: one line for ``--list``.
    """

    head: str
    backbone: str
    description: str

    @property
    def default_loss(self) -> str:
        """The loss the head's paper trains it with: "rce" (FasterPose) or "mse"."""
        return "rce" if self.head == "fasterpose" else "mse"

    @property
    def output_activation(self) -> str:
        """The default output: "sigmoid" (for RCE) or "linear" (for MSE)."""
        return OUTPUT_ACTIVATIONS[self.default_loss]


MODELS: dict[str, ZooEntry] = {
    "fasterpose_r50": ZooEntry("fasterpose", "r50", "FasterPose, ResNet-50"),
    "fasterpose_r101": ZooEntry("fasterpose", "r101", "FasterPose, ResNet-101"),
    "fasterpose_r152": ZooEntry("fasterpose", "r152", "FasterPose, ResNet-152"),
    "fasterpose_mnv2": ZooEntry("fasterpose", "mnv2", "FasterPose, MobileNetV2 1.0"),
    "fasterpose_mnv2_050": ZooEntry("fasterpose", "mnv2_050", "FasterPose, MobileNetV2 0.5"),
    "fasterpose_mnv2_035": ZooEntry("fasterpose", "mnv2_035", "FasterPose, MobileNetV2 0.35"),
    "simplebaseline_r50": ZooEntry("simplebaseline", "r50", "SimpleBaseline, ResNet-50"),
    "simplebaseline_r101": ZooEntry("simplebaseline", "r101", "SimpleBaseline, ResNet-101"),
    "simplebaseline_r152": ZooEntry("simplebaseline", "r152", "SimpleBaseline, ResNet-152"),
    "simplebaseline_mnv2": ZooEntry("simplebaseline", "mnv2", "SimpleBaseline, MobileNetV2 1.0"),
    "simplebaseline_mnv2_050": ZooEntry("simplebaseline", "mnv2_050",
                                        "SimpleBaseline, MobileNetV2 0.5"),
}


def get_entry(name: str) -> ZooEntry:
    """Returns the zoo entry for ``name`` or raises a ValueError listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def _check_input_size(input_size: Sequence[int]) -> tuple[int, int]:
    if len(input_size) != 2:
        raise ValueError(f"input_size must be (height, width), got {input_size}")
    h, w = (int(v) for v in input_size)
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise ValueError(
            f"input_size (height, width) = ({h}, {w}) must be positive multiples of 32 "
            "(the backbone's output stride)")
    return h, w


def _check_head_args(entry: ZooEntry, num_keypoints: int, feature_stride: int,
                     neck_channels: int, bn_momentum: float,
                     output_activation: str | None) -> str:
    """Validates ``build_model``'s head arguments; returns the output activation."""
    if int(num_keypoints) < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    if entry.head == "simplebaseline" and (feature_stride != 32 or neck_channels):
        raise ValueError("feature_stride and neck_channels apply to FasterPose models only")
    if neck_channels < 0:
        raise ValueError(f"neck_channels must be >= 0, got {neck_channels}")
    if not 0.0 <= bn_momentum < 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1), got {bn_momentum}")
    activation = output_activation or entry.output_activation
    if activation not in OUTPUT_ACTIVATIONS.values():
        raise ValueError(f"output_activation must be one of "
                         f"{sorted(set(OUTPUT_ACTIVATIONS.values()))}, got {activation!r}")
    return activation


def build_model(
    name: str,
    input_size: Sequence[int] = (256, 192),
    num_keypoints: int = NUM_KEYPOINTS,
    backbone_weights: str | None = None,
    feature_stride: int = 32,
    neck_channels: int = 0,
    bn_momentum: float = 0.99,
    output_activation: str | None = None,
    target_sigma: float = 2.0,
    output_bias: float | None = None,
) -> keras.Model:
    """Builds a zoo model.

    Args:
        name: a key of ``MODELS`` (see ``python -m fptflite.models --list``).
        input_size: (H, W) of the input crop, both multiples of 32.
        num_keypoints: K, number of heatmaps.
        backbone_weights: None (random init, logged), "imagenet" (needs internet) or a local
            keras.applications ``.h5`` weights file.
        feature_stride: FasterPose only: 32 (LR features, r = 8) or 16 (r = 4).
        neck_channels: FasterPose only: width of an optional 3x3 conv-BN-ReLU before the
            1x1 head conv; 0 means none (the default, lightest head).
        bn_momentum: momentum of every BatchNormalization layer. keras.applications'
            MobileNetV2 uses 0.999, whose moving statistics lag far behind during short
            trainings from scratch (inference outputs then look untrained); 0.99 is the
            TF Model Garden default, 0.9 suits runs of a few hundred steps.
        output_activation: "sigmoid" (probabilities, trained with RCE on their logits) or
            "linear" (trained with MSE); None: the head's default (``ZooEntry``).
        target_sigma: sigma (heatmap pixels) of the Gaussian targets the model will be
            trained on; a sigmoid output's bias starts at the logit of their mean on this
            model's own heatmap (``codec.mean_target_logit``), a linear output's at 0.
        output_bias: where the output conv's bias starts instead (None: as above).

    Returns:
        A functional keras.Model: input "image" [N, H, W, 3] float RGB pixels in [0, 255],
        output "heatmaps" [N, H/4, W/4, K] (by default sigmoid probabilities for FasterPose,
        linear for SimpleBaseline). The output layer "heatmaps" is the sigmoid (or linear)
        ``Activation`` after the conv "head_conv", except for SimpleBaseline's default
        linear output, which is its 1x1 conv "heatmaps" itself.
    """
    entry = get_entry(name)
    h, w = _check_input_size(input_size)
    activation = _check_head_args(entry, num_keypoints, feature_stride, neck_channels,
                                  bn_momentum, output_activation)
    heatmap_hw = (h // HEATMAP_STRIDE, w // HEATMAP_STRIDE)
    bias = (initial_output_bias(activation, target_sigma, heatmap_hw) if output_bias is None
            else float(output_bias))
    image = keras.Input((h, w, 3), name="image")
    features = build_backbone(entry.backbone, image, feature_stride, backbone_weights)
    if entry.head == "fasterpose":
        heatmaps = fasterpose_head(features, num_keypoints, feature_stride // HEATMAP_STRIDE,
                                   neck_channels, activation, bias)
    else:
        heatmaps = simplebaseline_head(features, num_keypoints, activation=activation,
                                       bias=bias)
    model = keras.Model(image, heatmaps, name=name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    return model


def initial_output_bias(output_activation: str, target_sigma: float,
                        heatmap_hw: Sequence[int]) -> float:
    """Where the output conv's bias starts, in every head: the logit of the mean target of an
    [H, W] = ``heatmap_hw`` heatmap for a sigmoid output (each loss starts from its neutral
    prediction instead of unlearning p = 0.5 everywhere; -3.68 at 32x32, -4.80 at 64x48), 0
    for a linear one."""
    if output_activation == "sigmoid":
        return mean_target_logit(target_sigma, heatmap_hw)
    return 0.0


def _output_conv(x: tf.Tensor, filters: int, name: str, bias: float) -> tf.Tensor:
    """The heads' final 1x1 conv: 0.001-std kernel, every bias at ``bias``."""
    return keras.layers.Conv2D(
        filters, 1, name=name,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.001),
        bias_initializer=keras.initializers.Constant(bias))(x)


def _output_activation(x: tf.Tensor, activation: str) -> tf.Tensor:
    # float32 even under a mixed_float16 policy: float16 rounds p to 1.0 past logit ~8.3.
    return keras.layers.Activation(activation, name="heatmaps", dtype="float32")(x)


def fasterpose_head(features: tf.Tensor, num_keypoints: int, block_size: int,
                    neck_channels: int = 0, activation: str = "sigmoid",
                    bias: float = 0.0) -> tf.Tensor:
    """FasterPose head: [N, h, w, C] -> [N, h*r, w*r, K] heatmaps, no upsampling convs.

    The 1x1 conv "head_conv" predicts K*r*r channels with every bias at ``bias`` (see
    ``initial_output_bias``); ``DepthToSpace(r)`` rearranges them into space; the
    ``Activation`` "heatmaps" (``activation``: "sigmoid" or "linear") ends the model.
    """
    x = features
    if neck_channels:
        x = keras.layers.Conv2D(neck_channels, 3, padding="same", use_bias=False,
                                name="neck_conv")(x)
        x = keras.layers.BatchNormalization(name="neck_bn")(x)
        x = keras.layers.ReLU(name="neck_relu")(x)
    x = _output_conv(x, num_keypoints * block_size**2, "head_conv", bias)
    x = DepthToSpace(block_size, name="depth_to_space")(x)
    return _output_activation(x, activation)


def _unwrapped(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer a wrapper (e.g. tfmot's ``QuantizeWrapperV2``) holds, else the layer."""
    while isinstance(getattr(layer, "layer", None), keras.layers.Layer):
        layer = layer.layer
    return layer


def heatmap_logits_model(model: keras.Model) -> keras.Model:
    """A view of a sigmoid-output ``model`` that outputs the logits its final sigmoid takes.

    The view shares every layer (and so every weight) with ``model``: training it trains
    ``model``, which keeps ending in the sigmoid for inference and export. Works on float
    models and on models whose output layer is wrapped (tfmot's QAT ``quant_heatmaps``): the
    output layer is found from the graph, not by name.

    Args:
        model: a functional model whose single output comes from a sigmoid ``Activation``
            layer (possibly wrapped).

    Returns:
        A keras.Model: "image" [N, H, W, 3] -> logits [N, H/4, W/4, K] (the compute dtype:
        float16 under mixed precision; losses cast them to float32).

    Raises:
        ValueError: when the model's output is not a sigmoid activation.
    """
    if len(model.outputs) != 1:
        raise ValueError(f"{model.name} has {len(model.outputs)} outputs; expected 1 heatmap")
    history = getattr(model.outputs[0], "_keras_history", None)
    last = history.layer if history is not None else None
    inner = _unwrapped(last) if last is not None else None
    activation = getattr(inner, "activation", None)
    if not isinstance(inner, keras.layers.Activation) or activation is not \
            keras.activations.sigmoid:
        raise ValueError(f"{model.name}: the output layer {getattr(last, 'name', None)!r} is "
                         "not a sigmoid Activation; only sigmoid outputs have logits")
    logits = last.get_input_at(history.node_index)
    return keras.Model(model.inputs, logits, name=f"{model.name}_logits")


def simplebaseline_head(features: tf.Tensor, num_keypoints: int,
                        deconv_channels: int = 256, num_deconvs: int = 3,
                        activation: str = "linear", bias: float = 0.0) -> tf.Tensor:
    """SimpleBaseline head: [N, h, w, C] -> [N, 8h, 8w, K] (3 deconvolutions): 3 x
    (Conv2DTranspose 4x4 s2, BN, ReLU), then a 1x1 conv with every bias at ``bias``.

    A linear output is that conv, named "heatmaps" (the paper's model); a sigmoid output is
    the conv "head_conv" followed by the ``Activation`` "heatmaps".
    """
    x = features
    for i in range(num_deconvs):
        x = keras.layers.Conv2DTranspose(deconv_channels, 4, strides=2, padding="same",
                                         use_bias=False, name=f"deconv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"deconv{i + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"deconv{i + 1}_relu")(x)
    if activation == "linear":
        return _output_conv(x, num_keypoints, "heatmaps", bias)
    return _output_activation(_output_conv(x, num_keypoints, "head_conv", bias), activation)


def zoo_names() -> list[str]:
    return list(MODELS)


def backbone_keys() -> list[str]:
    return list(BACKBONES)
