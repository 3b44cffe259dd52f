"""The ablation trains through the one Trainer: variant configs build the intended models, a
tiny study writes its schema from the runs' own files and never retrains, bad input errors."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tf_keras as keras

from fptflite import codec, losses, results
from fptflite.evaluation import coco_eval
from fptflite.models import count_macs, heatmap_logits_model
from fptflite.tasks import ablation, configs, trainer

# A study small enough for a test: 64x64 input, 24 + 6 synthetic images, 2 epochs.
TINY = ("input_size=[64,64]", "neck_channels=16", "batch_size_per_replica=8",
        "eval_flip_test=false", "data.synthetic_num_train=24", "data.synthetic_num_val=6")
RUN_KEYS = {"arm", "learning_rate", "final_ar", "kp_error", "pck", "ap_constant_score",
            "flip_logits_ap", "variant", "seed", "model", "head", "loss", "output_activation",
            "feature_stride", "neck_channels", "epochs", "model_dir", "curve", "final_ap",
            "best_ap", "params", "macs", "int8_ap", "int8_ms", "train_s", "int8_s", "run_s",
            "resumed", "config"}
RESULT_KEYS = {f.name for f in dataclasses.fields(results.AblationResult)}


def _options(out_dir, **kw):
    kw = {"variants": ("fasterpose_rce", "fasterpose_mse"), "seeds": (0,), "epochs": 2,
          "eval_every_epochs": 1, "overrides": TINY, "num_calibration": 8, "latency_runs": 3,
          **kw}
    return ablation.AblationOptions(out_dir=str(out_dir), **kw)


def test_default_recipe_is_the_demo_head():
    cfg = ablation.variant_config(ablation.recipe_config(ablation.AblationOptions("/o")),
                                  "fasterpose_rce", 0)
    assert (cfg.model, cfg.input_size, cfg.feature_stride, cfg.neck_channels, cfg.loss) == (
        "fasterpose_mnv2_050", (128, 128), 16, 64, "rce")
    assert cfg.eval_every_epochs == cfg.epochs // ablation.EVALS_PER_RUN > 0
    assert cfg.data.data_dir == os.path.join("/o", "data")


@pytest.mark.parametrize("variant,model,activation,stride,neck", [
    ("fasterpose_rce", "fasterpose_mnv2_050", "sigmoid", 16, 16),
    ("fasterpose_mse", "fasterpose_mnv2_050", "linear", 16, 16),
    ("simplebaseline_mse", "simplebaseline_mnv2_050", "linear", 32, 0),
    ("simplebaseline_rce", "simplebaseline_mnv2_050", "sigmoid", 32, 0),
    ("fasterpose_sigmoid_mse", "fasterpose_mnv2_050", "sigmoid", 16, 16)])
def test_variant_configs_build_the_intended_models(tmp_path, variant, model, activation,
                                                   stride, neck):
    recipe = ablation.recipe_config(_options(tmp_path))
    cfg = ablation.variant_config(recipe, variant, seed=3)
    assert (cfg.model, cfg.output_activation, cfg.feature_stride, cfg.neck_channels,
            cfg.seed) == (model, activation, stride, neck, 3)
    # Only the head, the loss and the seed differ from the recipe.
    same = {k: v for k, v in cfg.to_dict().items()
            if k not in ("model", "loss", "seed", "feature_stride", "neck_channels")}
    assert same == {k: v for k, v in recipe.to_dict().items() if k in same}
    net = trainer.build_training_model(cfg)
    assert net.layers[-1].name == "heatmaps" and net.output_shape == (None, 16, 16, 17)
    conv = net.get_layer("heatmaps" if variant == "simplebaseline_mse" else "head_conv")
    if activation == "sigmoid":
        # Mean of a sigma-2 Gaussian (sum 2 pi sigma^2) over the model's own 16x16 heatmap.
        p = 2 * np.pi * cfg.sigma**2 / (16 * 16)
        np.testing.assert_allclose(conv.bias.numpy(), np.log(p / (1 - p)), rtol=1e-6)
        assert heatmap_logits_model(net).output_shape == (None, 16, 16, 17)  # RCE trains it
    else:
        np.testing.assert_array_equal(conv.bias.numpy(), 0.0)
        with pytest.raises(ValueError, match="not a sigmoid"):
            heatmap_logits_model(net)
    keras.backend.clear_session()


def test_unknown_variant_and_recipe_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown ablation variant 'fasterpose_bce'"):
        ablation.run(_options(tmp_path, variants=("fasterpose_rce", "fasterpose_bce")))
    with pytest.raises(ValueError, match="unknown config 'nope'"):
        ablation.run(_options(tmp_path, recipe="nope"))
    assert not os.listdir(tmp_path)  # refused before writing anything


def test_arms_are_canonical_and_bad_arms_are_refused_before_anything_is_written(tmp_path):
    arm = ablation.parse_arm("fasterpose_rce:learning_rate=1e-2:epochs=68")
    assert arm.name == "fasterpose_rce:learning_rate=0.01:epochs=68" and not arm.is_sweep_point
    assert ablation.parse_arm("fasterpose_mse:learning_rate=0.0025").is_sweep_point
    assert ablation.run_dir("/o", "fasterpose_rce:learning_rate=1e-2", 2) == os.path.join(
        "/o", "runs", "fasterpose_rce+learning_rate=0.01_seed2")
    recipe = ablation.recipe_config(_options(tmp_path))
    cfg = ablation.variant_config(recipe, "fasterpose_rce:learning_rate=0.02:epochs=4", 1)
    assert (cfg.learning_rate, cfg.epochs, cfg.seed, cfg.loss) == (0.02, 4, 1, "rce")
    for bad, message in (
            ("fasterpose_rce:learning_rate=0", r"learning_rate=0'.*must be > 0"),
            ("fasterpose_rce:learning_rate=-1e-3", "must be > 0"),
            ("fasterpose_rce:loss=bce", "unknown loss 'bce'"),
            ("fasterpose_rce:epochs", "'epochs' is not key=value"),
            ("fasterpose_rce:lr=0.1", "unknown config key 'lr'")):
        with pytest.raises(ValueError, match=message):
            ablation.run(_options(tmp_path, variants=("fasterpose_mse", bad)))
    assert not os.listdir(tmp_path)


def test_output_bias_override_and_sigmoid_mse_trains_the_probabilities(tmp_path):
    recipe = ablation.recipe_config(_options(tmp_path))
    cfg = ablation.variant_config(recipe, "fasterpose_rce:output_bias=-4.8", 0)
    net = trainer.build_training_model(cfg)
    np.testing.assert_array_equal(net.get_layer("head_conv").bias.numpy(), np.float32(-4.8))
    cfg = ablation.variant_config(recipe, "fasterpose_sigmoid_mse", 0)
    assert (cfg.loss, cfg.output_activation) == ("sigmoid_mse", "sigmoid")
    loss = losses.loss_for(cfg.loss)
    assert isinstance(loss, losses.WeightedMSE)  # on the probabilities, not the logits
    keras.backend.clear_session()


def test_logit_flip_predictor_averages_logits():
    # A sigmoid model whose heatmaps vary over the crop: one random 3x3 conv (logits within
    # about +-5, where float32 probabilities still give the logits back).
    image = keras.Input((16, 16, 3))
    z = keras.layers.Conv2D(17, 3, padding="same", kernel_initializer=keras.initializers
                            .RandomNormal(stddev=0.002, seed=1))(image)
    net = keras.Model(image, keras.layers.Activation("sigmoid", name="heatmaps")(z))
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    p = net.predict(images, verbose=0).astype(np.float64)
    p_flipped = net.predict(images[:, :, ::-1], verbose=0).astype(np.float64)
    logit = lambda q: np.log(q / (1 - q))  # noqa: E731
    expected = 1 / (1 + np.exp(-0.5 * (logit(p) + logit(codec.flip_heatmaps(p_flipped)))))
    got = ablation.logit_flip_predictor(net)(images, np.arange(2))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # It differs from averaging probabilities wherever the two views disagree.
    prob_avg = 0.5 * (p + codec.flip_heatmaps(p_flipped))
    assert np.abs(got - prob_avg).max() > 1e-2
    keras.backend.clear_session()


def test_learning_rate_sweep_picks_each_losss_best_rate_and_claims_pair_them():
    def rec(arm, seed, ap, kp, lr):
        return {"arm": arm, "variant": arm.split(":")[0], "seed": seed, "final_ap": ap,
                "kp_error": kp, "epochs": 4, "learning_rate": lr,
                "curve": [{"epoch": 4, "ap": ap}]}

    records = [rec("fasterpose_rce", 0, 0.50, 2.0, 5e-3),
               rec("fasterpose_rce:learning_rate=0.01", 0, 0.56, 1.5, 1e-2),
               rec("fasterpose_rce:learning_rate=0.01", 1, 0.58, 1.4, 1e-2),
               rec("fasterpose_rce:learning_rate=0.02", 0, 0.54, 1.6, 2e-2),
               rec("fasterpose_mse:learning_rate=0.0025", 0, 0.57, 1.2, 2.5e-3),
               rec("fasterpose_mse", 0, 0.60, 1.0, 5e-3),
               rec("fasterpose_mse", 1, 0.59, 1.1, 5e-3),
               rec("fasterpose_rce:learning_rate=0.01:epochs=68", 0, 0.61, 0.9, 1e-2),
               rec("fasterpose_sigmoid_mse:learning_rate=0.01", 0, 0.40, 3.0, 1e-2),
               rec("fasterpose_mse:epochs=68", 0, 0.66, 0.7, 5e-3),
               # Not at MSE's chosen rate: compared with the same rate's 34 epochs only.
               rec("fasterpose_mse:learning_rate=0.0025:epochs=68", 0, 0.62, 0.8, 2.5e-3)]
    sweeps = ablation.learning_rate_sweeps(records)
    assert sweeps["fasterpose_rce"]["chosen"] == "fasterpose_rce:learning_rate=0.01"
    assert [r["learning_rate"] for r in sweeps["fasterpose_rce"]["rows"]] == [5e-3, 1e-2, 2e-2]
    assert sweeps["fasterpose_mse"]["chosen"] == "fasterpose_mse"
    a = ablation.verdicts(records)["a"]
    assert a["variants"] == ["fasterpose_rce:learning_rate=0.01", "fasterpose_mse"]
    assert np.allclose(a["final_ap_difference"]["per_seed"], [-0.04, -0.01])
    assert np.allclose(a["kp_error_difference"]["per_seed"], [0.5, 0.3])
    comparisons = {(c["arm"], c["baseline"]): c for c in ablation.comparisons(records)}
    assert set(comparisons) == {
        ("fasterpose_rce:learning_rate=0.01:epochs=68", "fasterpose_rce:learning_rate=0.01"),
        ("fasterpose_sigmoid_mse:learning_rate=0.01", "fasterpose_rce:learning_rate=0.01"),
        ("fasterpose_sigmoid_mse:learning_rate=0.01", "fasterpose_mse"),
        ("fasterpose_mse:epochs=68", "fasterpose_mse"),
        ("fasterpose_mse:learning_rate=0.0025:epochs=68", "fasterpose_mse:learning_rate=0.0025"),
        # Claim (a) at twice the epochs: each loss at its chosen rate, one same change.
        ("fasterpose_rce:learning_rate=0.01:epochs=68", "fasterpose_mse:epochs=68")}
    both_longer = comparisons[("fasterpose_rce:learning_rate=0.01:epochs=68",
                               "fasterpose_mse:epochs=68")]
    assert np.allclose(both_longer["final_ap_difference"]["per_seed"], [0.61 - 0.66])
    assert np.allclose(both_longer["kp_error_difference"]["per_seed"], [0.9 - 0.7])
    longer = comparisons[("fasterpose_rce:learning_rate=0.01:epochs=68",
                          "fasterpose_rce:learning_rate=0.01")]
    assert np.allclose(longer["final_ap_difference"]["per_seed"], [0.05])
    assert np.allclose(longer["kp_error_difference"]["per_seed"], [-0.6])


def test_budget_too_small_for_one_epoch_and_run_estimates(tmp_path):
    with pytest.raises(ValueError, match="too small for one epoch of any variant"):
        ablation.check_budget(30.0, {"fasterpose_rce": 40.0, "simplebaseline_mse": 90.0})
    ablation.check_budget(45.0, {"fasterpose_rce": 40.0, "simplebaseline_mse": 90.0})
    cfg = ablation.variant_config(ablation.recipe_config(_options(tmp_path, epochs=8,
                                                                  eval_every_epochs=2)),
                                  "fasterpose_rce", 0)
    cost = ablation.Cost(setup_s=10.0, epoch_s=5.0, eval_s=2.0, int8_s=7.0)
    assert cost.one_epoch_s() == 17.0
    assert ablation.estimate_run_s(cfg, [], cost, str(tmp_path)) == 10 + 8 * 5 + 4 * 2 + 7
    measured = [{"run_s": 50.0, "resumed": False, "epochs": 8},
                {"run_s": 35.0, "resumed": False, "epochs": 4},  # 8.75 s per epoch, as 70 / 8
                {"run_s": 5.0, "resumed": True, "epochs": 8}]  # a resumed run's is partial
    assert ablation.estimate_run_s(cfg, measured, cost, str(tmp_path)) == 60.0
    # A killed run that evaluated 6 of its 8 epochs has a quarter left.
    with open(tmp_path / "eval_history.json", "w") as f:
        json.dump([{"epoch": 6, "step": 60, "AP": 0.1}], f)
    assert ablation.estimate_run_s(cfg, measured, cost, str(tmp_path)) == 15.0


def test_verdicts_pair_seeds():
    def rec(variant, seed, ap, macs, ms):
        return {"variant": variant, "seed": seed, "final_ap": ap, "epochs": 4, "macs": macs,
                "curve": [{"epoch": 2, "ap": ap / 2}, {"epoch": 4, "ap": ap}],
                "int8_ms": {"1": ms, "2": ms / 2}}

    records = [rec("fasterpose_rce", 0, 0.30, 35, 1.0), rec("fasterpose_rce", 1, 0.32, 35, 1.0),
               rec("fasterpose_rce", 2, 0.40, 35, 1.0), rec("fasterpose_mse", 0, 0.20, 35, 1.0),
               rec("fasterpose_mse", 1, 0.25, 35, 1.0), rec("fasterpose_mse", 2, 0.33, 35, 1.0),
               rec("simplebaseline_mse", 1, 0.36, 455, 10.0)]
    v = ablation.verdicts(records)
    a = v["a"]["final_ap_difference"]
    assert a["seeds"] == [0, 1, 2] and np.allclose(a["per_seed"], [0.10, 0.07, 0.07])
    # By hand: mean 0.08, sd 0.01732, t(0.975, 2) = 4.303: 0.08 -+ 4.303 * 0.01732 / sqrt(3).
    assert np.allclose(a["interval"], [0.08 - 0.04303, 0.08 + 0.04303], atol=1e-4)
    assert v["a"]["ends_more_accurate"] == "supported"
    # AP at 25% of 4 epochs = epoch 1, before the first evaluation: the first AP (ap / 2).
    assert np.allclose(v["a"]["early_ap_difference"]["per_seed"], [0.05, 0.035, 0.035])
    # Two seeds 0.10 and 0.07 apart: t(0.975, 1) = 12.706 makes the interval straddle 0.
    assert ablation.verdicts(records[:5])["a"]["ends_more_accurate"] == "undecided"
    b = v["b"]
    assert b["final_ap_difference"]["seeds"] == [1] and b["final_ap_difference"]["interval"] is None
    assert np.isclose(b["final_ap_difference"]["mean"], -0.04)
    assert b["ap_matches"] == "one seed"
    records.append(rec("simplebaseline_mse", 0, 0.34, 455, 10.0))
    b = ablation.verdicts(records)["b"]
    assert np.allclose(b["final_ap_difference"]["per_seed"], [-0.04, -0.04])
    assert np.isclose(b["macs_fraction"]["mean"], 35 / 455)
    assert np.isclose(b["int8_ms_fraction_2_threads"]["mean"], 0.1)
    assert b["ap_matches"] == "contradicted"  # 4 AP points behind, beyond the tolerance
    assert b["int8_ms_fraction_side_by_side"] is None  # nothing timed side by side
    side = {"ms": {"fasterpose_rce": {"1": 1.0, "2": 0.6},
                   "simplebaseline_mse": {"1": 8.0, "2": 5.0}}}
    assert ablation.verdicts(records, side)["b"]["int8_ms_fraction_side_by_side"] == {
        "1": 0.125, "2": 0.12}
    records[-2]["final_ap"], records[-1]["final_ap"] = 0.325, 0.305  # half a point behind
    assert ablation.verdicts(records)["b"]["ap_matches"] == "supported"
    assert ablation.verdicts(records[:3])["a"]["ends_more_accurate"] == "not measured"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, ablation.run(_options(out))


@pytest.mark.slow
def test_tiny_study_schema_and_curves_from_the_runs(study):
    out, result = study
    saved = ablation.load_result(str(out))
    assert set(saved) == RESULT_KEYS and saved["runs"] == json.loads(json.dumps(result["runs"]))
    assert saved["seeds_per_variant"] == {"fasterpose_rce": 1, "fasterpose_mse": 1}
    assert [(r["variant"], r["seed"]) for r in saved["runs"]] == [
        ("fasterpose_rce", 0), ("fasterpose_mse", 0)]
    for r in saved["runs"]:
        assert set(r) == RUN_KEYS
        model_dir = out / r["model_dir"]
        cfg = configs.load_config(str(model_dir))
        assert cfg == ablation.variant_config(ablation.recipe_config(_options(out)),
                                              r["variant"], 0)
        # The curve is the run's own eval history; its last point its final evaluation.
        final = json.loads((model_dir / "final_metrics.json").read_text())
        assert [p["epoch"] for p in r["curve"]] == [1, 2]
        steps = r["curve"][0]["step"]
        assert steps > 0 and r["curve"][1]["step"] == 2 * steps
        assert r["curve"][-1]["ap"] == final["AP"] == r["final_ap"]
        assert r["curve"][-1]["kp_error"] == final["kp_error"] == r["kp_error"] > 0
        assert (r["final_ar"], r["pck"]) == (final["AR"], final["PCK"])
        # AP with constant person scores: the last evaluation's results rescored by hand.
        with open(model_dir / "eval" / "keypoints_results.json") as f:
            results = [{**x, "score": 1.0} for x in json.load(f)]
        assert r["ap_constant_score"] == coco_eval.run_cocoeval(
            str(out / "data" / "annotations" / "person_keypoints_val.json"), results)["AP"]
        assert r["flip_logits_ap"] is None  # no flip test in this tiny study
        assert r["best_ap"] == final["best_AP"] == max(p["ap"] for p in r["curve"])
        net = keras.models.load_model(str(model_dir / "final.keras"), compile=False)
        assert (r["params"], r["macs"]) == (net.count_params(), count_macs(net))
        assert (net.layers[-1].activation.__name__, r["output_activation"]) == (
            ("sigmoid",) * 2 if r["loss"] == "rce" else ("linear",) * 2)
        assert os.path.getsize(model_dir / "int8_ptq.tflite") > 0
        assert 0 <= r["int8_ap"] <= 1 and set(r["int8_ms"]) == {"1", "2"}
        assert all(ms > 0 for ms in r["int8_ms"].values()) and r["train_s"] > 0
        assert r["resumed"] is False and r["run_s"] >= r["train_s"] + r["int8_s"] - 0.1
    a = saved["verdicts"]["a"]["final_ap_difference"]
    assert a["per_seed"] == [saved["runs"][0]["final_ap"] - saved["runs"][1]["final_ap"]]
    assert saved["verdicts"]["b"]["ap_matches"] == "not measured"
    # One int8 file per variant timed side by side: the runs' own files.
    side = saved["int8_ms_side_by_side"]
    assert side["files"] == {r["variant"]: os.path.join(r["model_dir"], "int8_ptq.tflite")
                             for r in saved["runs"]}
    assert side["runs"] == 3 and all(ms > 0 for t in side["ms"].values() for ms in t.values())
    assert set(side["ms"]["fasterpose_rce"]) == {"1", "2"}
    table = (out / "ablation.md").read_text()
    assert "| fasterpose_rce | 1 |" in table and "| fasterpose_mse | 1 |" in table
    # One seed: the mean alone, no sd of 0 that reads as a measured spread.
    r0 = saved["runs"][0]
    assert (f"| {r0['variant']} | 1 | {r0['final_ap']:.3f} | {r0['final_ar']:.3f} | "
            f"{r0['kp_error']:.2f} | {r0['pck']:.3f} | {r0['ap_constant_score']:.3f} | "
            "- |") in table
    assert "**(a) RCE vs MSE**" in table
    assert (out / "convergence.png").stat().st_size > 1000


def _mtimes(out):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(out / "runs") for f in files}


@pytest.mark.slow
def test_rerun_does_not_retrain_and_other_recipes_are_refused(study):
    out, result = study
    before = _mtimes(out)
    again = ablation.run(_options(out))
    assert _mtimes(out) == before  # no run touched: nothing retrained or re-measured
    assert again["runs"] == json.loads(json.dumps(result["runs"]))
    # A later invocation with fewer variants still reports every finished run.
    subset = ablation.run(_options(out, variants=("fasterpose_mse",)))
    assert subset["seeds_per_variant"] == {"fasterpose_rce": 1, "fasterpose_mse": 1}
    assert subset["summary"].keys() == {"fasterpose_rce", "fasterpose_mse"}
    assert _mtimes(out) == before
    saved = (out / "ablation.json").read_bytes()
    with pytest.raises(ValueError, match=r"another recipe .*epochs.*new output dir"):
        ablation.run(_options(out, epochs=3))
    assert (out / "ablation.json").read_bytes() == saved and _mtimes(out) == before


@pytest.mark.slow
def test_budget_too_small_is_refused_after_a_probe(study, tmp_path):
    out = tmp_path / "small"
    opts = _options(out, variants=("fasterpose_mse",), budget_minutes=0.05,
                    data_dir=str(study[0] / "data"))  # 3 s: the probe alone takes longer
    with pytest.raises(ValueError, match=r"0\.05 min is too small for one epoch of any "
                                         r"variant \(the cheapest, fasterpose_mse"):
        ablation.run(opts)
    assert not (out / "probe").exists() and not (out / "runs").exists()


def test_convergence_styles_one_colour_family_per_variant_and_chosen_arms_thick():
    arms = ["fasterpose_rce", "fasterpose_rce:learning_rate=0.02",
            "fasterpose_rce:learning_rate=0.02:epochs=68", "fasterpose_mse"]
    styles = ablation.arm_styles(arms, chosen=["fasterpose_rce:learning_rate=0.02"])
    rce, rce_chosen, mse = (np.array(styles[a]["color"][:3]) for a in (
        "fasterpose_rce", "fasterpose_rce:learning_rate=0.02", "fasterpose_mse"))
    assert rce[0] > rce[2] and rce_chosen[0] > rce_chosen[2]  # RCE's arms: Reds
    assert mse[2] > mse[0] and not np.allclose(rce, rce_chosen)  # MSE: Blues; a shade per arm
    assert [styles[a]["linestyle"] for a in arms] == ["--", "-", "-", "--"]
    assert styles["fasterpose_rce:learning_rate=0.02"]["linewidth"] > styles[
        "fasterpose_rce:learning_rate=0.02:epochs=68"]["linewidth"] > styles[
        "fasterpose_rce"]["linewidth"]
