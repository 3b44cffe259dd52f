"""Ablation plumbing: variants share weights between their training and inference views, the
budget arithmetic, and a tiny end-to-end run whose JSON matches the schema and the zoo."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fptflite.models import build_model, count_macs
from fptflite.tasks import ablation

ROW_KEYS = {"name", "head", "loss", "feature_stride", "epoch_ap", "params", "macs", "train_s",
            "int8_ap", "int8_ms"}


@pytest.mark.parametrize("name", ["fasterpose_rce", "fasterpose_mse", "simplebaseline_rce"])
def test_variant_views_share_weights_and_start_neutral(name):
    v = ablation.get_variant(name)
    s = ablation.settings_with(input_size=(64, 64))
    logits, inference = ablation.build_variant(v, s)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    z = logits(x, training=False).numpy()
    p = inference(x, training=False).numpy()
    if v.loss == "rce":  # the sigmoid of the trained logits, nothing else
        np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), atol=1e-6)
        expected_bias = ablation.LOGIT_PRIOR
    else:
        assert inference is logits
        expected_bias = 0.0
    conv = "head_conv" if v.head == "fasterpose" else "heatmaps"
    bias = logits.get_layer(conv).bias.numpy()
    np.testing.assert_allclose(bias, expected_bias, atol=1e-6)
    # With 0.001-std kernels the start is the bias everywhere, give or take.
    assert abs(float(np.median(z)) - expected_bias) < 0.05


def test_choose_epochs_fits_the_budget():
    costs = {"a": {"trace_s": 5.0, "step_s": 0.1, "crop_s": 0.01},
             "b": {"trace_s": 5.0, "step_s": 0.4, "crop_s": 0.02}}
    # fixed = 2 * (45 + 10) = 110 s; per epoch = (0.1*50 + 0.01*100 + 1) + (0.4*50 + 2 + 1) = 30
    assert ablation.choose_epochs(110 + 30 * 7 + 29, costs, 50, 100, 60) == 7
    assert ablation.choose_epochs(10, costs, 50, 100, 60) == 1  # never fewer than one
    assert ablation.choose_epochs(1e6, costs, 50, 100, 60) == 60


@pytest.mark.slow
def test_tiny_ablation_run_writes_schema_and_zoo_counts(tmp_path):
    s = ablation.settings_with(input_size=(64, 64), num_train_images=24, num_val_images=6,
                               batch_size=8, variants=("fasterpose_mse", "simplebaseline_rce"),
                               latency_runs=3, num_calibration=8)
    result = ablation.run(str(tmp_path), budget_minutes=1, s=s, epochs=2)
    with open(tmp_path / "ablation.json") as f:
        saved = json.load(f)
    assert saved["variants"] == json.loads(json.dumps(result["variants"]))
    assert [r["name"] for r in saved["variants"]] == list(s.variants)
    for row in saved["variants"]:
        assert ROW_KEYS <= set(row)
        v = ablation.get_variant(row["name"])
        assert (row["head"], row["loss"], row["feature_stride"]) == (
            v.head, v.loss, v.feature_stride)
        assert len(row["epoch_ap"]) == 2 and all(0 <= a <= 1 for a in row["epoch_ap"])
        zoo = build_model(v.model, (64, 64), feature_stride=v.feature_stride,
                          neck_channels=v.neck_channels)
        assert row["params"] == zoo.count_params()  # sigmoid or not: same weights
        assert row["macs"] == count_macs(zoo)
        assert 0 <= row["int8_ap"] <= 1 and row["int8_ms"] > 0 and row["train_s"] > 0
        assert os.path.isfile(tmp_path / "tflite" / f"{v.name}_int8_ptq.tflite")
        tf.keras.backend.clear_session()
    sb, fp = saved["variants"][1], saved["variants"][0]
    assert sb["macs"] > 3 * fp["macs"]  # three deconvolutions vs one 1x1 conv
    table = (tmp_path / "ablation.md").read_text()
    assert "| simplebaseline_rce | simplebaseline | rce | 32 |" in table
    assert (tmp_path / "convergence.png").stat().st_size > 1000
