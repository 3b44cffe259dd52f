"""Model zoo: shapes, published size anchors, exact MAC counting, serialization, bad input."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from fptflite.models import (
    MODELS,
    DepthToSpace,
    build_model,
    count_macs,
    heatmap_logits_model,
    summarize,
)
from fptflite.models.backbones import BACKBONES


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_zoo_model_shapes_and_no_lambda(name):
    model = build_model(name, input_size=(64, 32), num_keypoints=5)
    assert model.input_shape == (None, 64, 32, 3)
    assert model.output_shape == (None, 16, 8, 5)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers), "must be flat"
    out = model(np.random.default_rng(0).uniform(0, 255, (2, 64, 32, 3)).astype("float32"))
    if MODELS[name].head == "fasterpose":
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0
        assert "depth_to_space" in [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "name,params,tol",
    [("simplebaseline_r50", 34.0e6, 0.01), ("simplebaseline_mnv2", 9.6e6, 0.02)])
def test_published_param_counts(name, params, tol):
    s = summarize(build_model(name, input_size=(256, 192)))
    assert abs(s["params"] - params) / params <= tol, s["params"]


# Exact counts (the counter is exact: test_mac_counting_against_hand_formula); the README's
# zoo table shows them rounded (3.884 / 0.360 / 5.200 GMACs).
EXACT_MACS = {"fasterpose_r50": 3_884_187_648, "fasterpose_mnv2": 360_228_864,
              "simplebaseline_r50": 5_199_888_384}


@pytest.mark.parametrize("name", ["fasterpose_r50", "fasterpose_mnv2"])
def test_fasterpose_macs(name):
    s = summarize(build_model(name, input_size=(256, 192)))
    assert s["macs"] == EXACT_MACS[name]
    assert s["output_shape"] == [64, 48, 17]


def test_fasterpose_r50_saves_flops_against_simplebaseline():
    fp = count_macs(build_model("fasterpose_r50"))
    sb = count_macs(build_model("simplebaseline_r50"))
    # Backbone MACs are shared; the head is where the deconvolutions cost: 0.747 of the MACs.
    assert (fp, sb) == (EXACT_MACS["fasterpose_r50"], EXACT_MACS["simplebaseline_r50"])
    assert fp / sb == pytest.approx(0.74697, abs=1e-5)


def test_mac_counting_against_hand_formula():
    x = keras.Input((8, 6, 4))
    y = keras.layers.Conv2D(10, 3, padding="same")(x)  # 8*6*3*3*4*10 = 17280
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(y)  # 4*3*3*3*10 = 1080
    y = keras.layers.Conv2DTranspose(7, 4, strides=2, padding="same")(y)  # 4*3*4*4*10*7 = 13440
    y = keras.layers.Conv2D(6, 1, groups=1)(y)  # 8*6*7*6 = 2016
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(5)(y)  # 6*5 = 30
    assert count_macs(keras.Model(x, y)) == 17280 + 1080 + 13440 + 2016 + 30


def test_depth_to_space_matches_numpy_reference_and_round_trips_config():
    r, k = 2, 3
    x = np.arange(1 * 2 * 3 * k * r * r, dtype=np.float32).reshape(1, 2, 3, k * r * r)
    layer = DepthToSpace(r)
    y = layer(x).numpy()
    ref = np.zeros((1, 4, 6, k), np.float32)
    for yy in range(2):
        for xx in range(3):
            for i in range(r):
                for j in range(r):
                    c = (i * r + j) * k
                    ref[0, yy * r + i, xx * r + j] = x[0, yy, xx, c:c + k]
    np.testing.assert_array_equal(y, ref)
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, DepthToSpace) and clone.block_size == r
    with pytest.raises(ValueError, match="block_size"):
        DepthToSpace(1)


@pytest.mark.parametrize("name", ["fasterpose_mnv2_035", "simplebaseline_mnv2"])
def test_keras_save_load_equality_without_custom_objects(tmp_path, name):
    model = build_model(name, input_size=(64, 64), num_keypoints=4)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    clone = keras.Model.from_config(model.get_config())
    assert [type(a) for a in clone.layers] == [type(b) for b in model.layers]


@pytest.mark.parametrize("name,activation,sigma", [
    ("fasterpose_mnv2_035", None, 2.0), ("fasterpose_mnv2_035", "linear", 2.0),
    ("simplebaseline_mnv2_050", None, 2.0), ("simplebaseline_mnv2_050", "sigmoid", 1.5)])
def test_output_activation_and_initial_bias(name, activation, sigma):
    model = build_model(name, input_size=(64, 32), num_keypoints=5, output_activation=activation,
                        target_sigma=sigma)
    expected = activation or MODELS[name].output_activation
    if activation is None:  # today's models: FasterPose sigmoid, SimpleBaseline linear
        assert expected == ("sigmoid" if name.startswith("fasterpose") else "linear")
    out = model.layers[-1]
    assert out.name == "heatmaps" and model.output_shape == (None, 16, 8, 5)
    if expected == "sigmoid":
        assert isinstance(out, keras.layers.Activation)
        assert out.activation is keras.activations.sigmoid
        # The Gaussian target (peak 1) sums to 2 pi sigma^2: its mean over the model's own
        # 16x8 heatmap (the 64x32 input at stride 4).
        p = 2 * np.pi * sigma**2 / (16 * 8)
        bias = np.log(p / (1 - p))
    else:
        assert not any(getattr(layer, "activation", None) is keras.activations.sigmoid
                       for layer in model.layers)
        bias = 0.0
    conv = model.get_layer("heatmaps" if name.startswith("simplebaseline") and
                           expected == "linear" else "head_conv")
    assert isinstance(conv, keras.layers.Conv2D)
    np.testing.assert_allclose(conv.bias.numpy(), bias, rtol=1e-6)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 32, 3)).astype("float32")
    y = model(x).numpy()
    # 0.001-std kernels: the untrained output is the bias (through the activation), nearly.
    start = 1 / (1 + np.exp(-bias)) if expected == "sigmoid" else 0.0
    assert abs(float(np.median(y)) - start) < 0.01
    if expected == "sigmoid":
        np.testing.assert_allclose(tf.sigmoid(heatmap_logits_model(model)(x)).numpy(), y,
                                   atol=1e-6)


def test_unknown_output_activation_is_refused():
    with pytest.raises(ValueError, match="output_activation must be one of"):
        build_model("fasterpose_mnv2_035", (64, 64), output_activation="softmax")


def test_stride16_head_uses_block_size_4():
    model = build_model("fasterpose_mnv2_035", input_size=(64, 64), feature_stride=16,
                        neck_channels=16)
    assert model.get_layer("depth_to_space").block_size == 4
    assert model.get_layer("neck_conv").filters == 16
    assert model.output_shape == (None, 16, 16, 17)


def test_local_backbone_weights_are_loaded(tmp_path):
    spec = BACKBONES["mnv2_035"]
    ref = spec.constructor(include_top=False, weights=None, alpha=0.35, input_shape=(64, 64, 3))
    for w in ref.weights:  # make them distinguishable from any random init
        w.assign(tf.random.stateless_uniform(w.shape, (1, 2)))
    path = str(tmp_path / "mnv2_035_notop.h5")
    ref.save_weights(path)
    model = build_model("fasterpose_mnv2_035", input_size=(64, 64), backbone_weights=path)
    np.testing.assert_array_equal(model.get_layer("Conv1").kernel.numpy(),
                                  ref.get_layer("Conv1").kernel.numpy())
    np.testing.assert_array_equal(model.get_layer("Conv_1").kernel.numpy(),
                                  ref.get_layer("Conv_1").kernel.numpy())


def test_resnet_caffe_weights_are_flipped_to_rgb(tmp_path):
    ref = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = str(tmp_path / "r50_notop.h5")
    ref.save_weights(path)
    model = build_model("fasterpose_r50", input_size=(64, 64), backbone_weights=path)
    k_ref = ref.get_layer("conv1_conv").kernel.numpy()
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel.numpy(), k_ref[:, :, ::-1])
    np.testing.assert_array_equal(model.get_layer("conv5_block3_3_conv").kernel.numpy(),
                                  ref.get_layer("conv5_block3_3_conv").kernel.numpy())


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(name="fasterpose_r18"), ValueError, "unknown model name"),
        (dict(name="fasterpose_mnv2", input_size=(250, 192)), ValueError, "multiples of 32"),
        (dict(name="fasterpose_mnv2", num_keypoints=0), ValueError, "num_keypoints"),
        (dict(name="fasterpose_mnv2", backbone_weights="/nonexistent/w.h5"), FileNotFoundError,
         "/nonexistent/w.h5"),
    ])
def test_bad_input_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_model(**kwargs)


def test_corrupt_weights_file_names_the_file(tmp_path):
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="garbage.h5"):
        build_model("fasterpose_mnv2_035", input_size=(64, 64), backbone_weights=str(bad))
