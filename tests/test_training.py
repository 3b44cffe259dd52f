"""Training: strict configs, bit-exact kill -9 resume on 2 replicas, multi-worker equals one
process, every person once per epoch on 1-3 replicas, bad images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras
from helpers.workers import run_workers

from fptflite.tasks import configs, trainer

# Measured: 207/207 tensors of final.keras bit-identical (2 workers on 127.0.0.1 vs 1 process
# on 2 logical CPUs, same global batches; a sum of two replicas is exact in either order).
MULTI_WORKER_ATOL = 0.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=demo", "--set=model=fasterpose_mnv2_035", "--set=input_size=[64,64]",
        "--set=neck_channels=16", "--batch_size=8", "--epochs=2",
        "--set=checkpoint_every_steps=3", "--set=eval_every_epochs=0",
        "--set=eval_flip_test=false", "--deterministic"]
# Global batch 8 = 2 replicas x 4 (MirroredStrategy on 2 logical CPUs or 2 workers); 4 steps
# per tf.function call (loops stop at the every-3-steps checkpoints and at the kill step).
TWO_REPLICAS = ["--batch_size=4", "--set=steps_per_loop=4"]
MIRRORED = ["--strategy=mirrored", "--cpu_replicas=2", *TWO_REPLICAS]


def _train_cli(data_dir, model_dir, *extra, check=True):
    out = subprocess.run([sys.executable, "-m", "training.train", f"--data_dir={data_dir}",
                          f"--run_dir={model_dir}", *TINY, *extra],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _weights(model_dir):
    model = keras.models.load_model(os.path.join(model_dir, "final.keras"), compile=False)
    return [w.numpy() for w in model.weights]


def test_config_overrides_are_strict():
    cfg = configs.get_config("demo")
    assert configs.override(cfg, "augment.flip", "false").augment.flip is False
    assert configs.override(cfg, "input_size", "[64, 96]").input_size == (64, 96)
    with pytest.raises(ValueError, match="unknown config key 'epoch'"):
        configs.override(cfg, "epoch", "3")
    with pytest.raises(ValueError, match="needs an integer"):
        configs.override(cfg, "epochs", "2.5")
    with pytest.raises(ValueError, match="unknown config"):
        configs.get_config("nope")
    assert configs.from_dict(cfg.to_dict()) == cfg
    paper = configs.get_config("fasterpose_r50_coco_256x192")
    assert (paper.learning_rate, paper.epochs, paper.lr_decay_epochs, paper.sigma,
            paper.batch_size_per_replica, paper.head) == (1e-3, 140, (90, 120), 2.0, 32,
                                                          "fasterpose")
    assert configs.get_config("simplebaseline_r50_coco_256x192").head == "simplebaseline"


def test_config_loss_picks_the_output_and_defaults_by_head():
    fp, sb = (configs.get_config(n) for n in ("fasterpose_r50_coco_256x192",
                                              "simplebaseline_r50_coco_256x192"))
    assert (fp.loss, fp.loss_name, fp.output_activation) == ("", "rce", "sigmoid")
    assert (sb.loss_name, sb.output_activation) == ("mse", "linear")
    # The demo recipe sets its loss: the loss study's verdict (docs/ablation.md).
    demo = configs.get_config("demo")
    assert (demo.loss, demo.output_activation, demo.learning_rate) == ("mse", "linear", 2e-2)
    mse = configs.override(fp, "loss", "mse")
    assert (mse.loss_name, mse.output_activation) == ("mse", "linear")
    sigmoid_mse = configs.override(fp, "loss", "sigmoid_mse")
    assert (sigmoid_mse.loss_name, sigmoid_mse.output_activation) == ("sigmoid_mse", "sigmoid")
    assert configs.override(sb, "loss", "rce").output_activation == "sigmoid"
    assert configs.from_dict(mse.to_dict()) == mse
    with pytest.raises(ValueError, match="unknown loss 'bce'"):
        configs.override(fp, "loss", "bce").validate()


def test_eval_history_keeps_each_epoch_once_across_resumes():
    def entry(epoch, ap):
        return {"epoch": epoch, "step": 9 * epoch, "AP": ap}

    history = []
    for e in (1, 2, 3):
        history = trainer.merge_evaluation(history, entry(e, e / 10))
    # Killed after evaluating epoch 3 but before its checkpoint: the resumed run (from the
    # epoch-2 checkpoint) drops it, trains epoch 3 again and its evaluation replaces it.
    resumed = trainer.history_until(history, 2)
    assert resumed == [entry(1, 0.1), entry(2, 0.2)]
    assert trainer.merge_evaluation(history, entry(3, 0.35)) == \
        [entry(1, 0.1), entry(2, 0.2), entry(3, 0.35)]
    # A re-evaluation of an earlier epoch drops the later ones of the lost timeline.
    assert trainer.merge_evaluation(history, entry(2, 0.25)) == [entry(1, 0.1), entry(2, 0.25)]
    assert trainer.history_until(history, 3) == history


@pytest.fixture(scope="module")
def mirrored_run(synthetic_data, tmp_path_factory):
    """An uninterrupted run on MirroredStrategy over 2 logical CPUs."""
    model_dir = tmp_path_factory.mktemp("mirrored") / "model"
    out = _train_cli(synthetic_data["root"], model_dir, *MIRRORED)
    assert "2 replicas on 1 workers, global batch 8, 9 steps/epoch" in out.stderr
    return model_dir


@pytest.mark.slow
def test_kill9_mid_epoch_on_2_replicas_resumes_bit_identical(synthetic_data, mirrored_run,
                                                             tmp_path):
    assert (mirrored_run / "config.json").is_file() and (mirrored_run / "tensorboard").is_dir()
    crashed = tmp_path / "crashed"
    # The same settings as the uninterrupted run (evaluating every epoch changes no weight).
    args = [*MIRRORED, "--set=eval_every_epochs=1"]
    out = _train_cli(synthetic_data["root"], crashed, *args, "--kill_after_steps=13",
                     check=False)
    assert out.returncode == -9, out.stderr[-3000:]  # SIGKILL: no cleanup ran
    assert not (crashed / "final.keras").exists()
    out = _train_cli(synthetic_data["root"], crashed, *args)
    # 74 persons / global batch 8 = 9 steps/epoch; checkpoints every 3 steps inside an epoch
    # and at its end: the kill after global step 13 resumes from ckpt-12 = epoch 1, step 3.
    assert "ckpt-12: epoch 1, step 3 of 9" in out.stderr, out.stderr[-3000:]
    # Bit-identical (207/207 tensors) since checkpoints sync the replicas' BatchNorm moving
    # statistics (trainer.sync_replica_local_variables); before, the 81 moving mean/variance
    # tensors differed by up to 9.5e-7 and every trainable tensor was already identical.
    single, resumed = _weights(mirrored_run), _weights(crashed)
    assert len(single) == len(resumed) > 100
    for a, b in zip(single, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    # A finished run re-run with the same command trains nothing more.
    # The evaluation of epoch 1 (before the kill) and of epoch 2 (after the resume), once.
    history = json.loads((crashed / "eval_history.json").read_text())
    assert [(h["epoch"], h["step"]) for h in history] == [(1, 9), (2, 18)]
    final = json.loads((crashed / "final_metrics.json").read_text())
    assert {k: v for k, v in history[-1].items() if k not in ("epoch", "step")} == \
        {k: v for k, v in final.items() if k != "best_AP"}
    out = _train_cli(synthetic_data["root"], crashed, *args)
    assert "Epoch" not in out.stdout
    assert json.loads((crashed / "eval_history.json").read_text()) == history


def test_resume_refuses_a_different_config(synthetic_data, tmp_path):
    cfg = configs.get_config("demo")
    cfg = configs.override(cfg, "data.data_dir", synthetic_data["root"])
    trainer.check_config(cfg, str(tmp_path), is_chief=True)
    with pytest.raises(ValueError, match="another config"):
        trainer.check_config(configs.override(cfg, "learning_rate", "0.5"), str(tmp_path), True)


@pytest.mark.slow
def test_two_workers_match_one_process_with_two_replicas(synthetic_data, mirrored_run,
                                                         tmp_path):
    """2 workers x batch 4 (MultiWorkerMirroredStrategy on 127.0.0.1) train on the same
    global batches as 1 process x 2 logical CPUs x batch 4, so the weights must agree."""
    logs = run_workers([f"--data_dir={synthetic_data['root']}",
                        f"--run_dir={tmp_path / 'model'}", *TINY, *TWO_REPLICAS], tmp_path)
    for log in logs:
        assert "2 replicas on 2 workers, global batch 8, 9 steps/epoch" in log
        assert "Epoch 2/2" in log
    # Non-chief checkpoints and exports went to scratch dirs, removed at the end.
    assert not any(n.startswith(".worker") for n in os.listdir(tmp_path / "model"))
    single, multi = _weights(mirrored_run), _weights(tmp_path / "model")  # chief's export
    assert len(single) == len(multi) > 100
    for a, b in zip(single, multi, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=MULTI_WORKER_ATOL)


@pytest.mark.slow
def test_every_person_once_per_epoch_on_1_2_3_replicas(synthetic_data, tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "data_order.py"),
         f"--data_dir={synthetic_data['root']}", "--replicas=1,2,3", "--batch_size=4",
         "--epochs=2", f"--out_json={tmp_path / 'rows.json'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {(r["source"], r["replicas"]) for r in rows} == {
        (s, n) for s in ("image files", "tfrecords") for n in (1, 2, 3)}
    for r in rows:
        n, b = r["replicas"], 4
        assert r["steps"] == r["persons"] // (n * b), r
        assert r["used"] == r["distinct"] == r["steps"] * n * b, r  # nobody twice
        assert r["unknown"] == 0 and r["per_replica"] == [r["steps"] * b] * n, r
        assert r["dropped"] == r["persons"] % (n * b), r  # the documented remainder only
        assert r["leftover_batches"] == 0, r  # nothing leaks into the next epoch


def test_corrupt_training_image_is_named_or_skipped(synthetic_data, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(synthetic_data["root"], data)
    ann = json.load(open(data / "annotations" / "person_keypoints_train.json"))
    victim = ann["images"][0]["file_name"]
    (data / "images" / "train" / victim).write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = _train_cli(data, tmp_path / "m1", "--epochs=1", check=False)
    assert out.returncode != 0
    assert victim in out.stderr and "skip_invalid" in out.stderr
    assert "DataError" in out.stderr
    out = _train_cli(data, tmp_path / "m2", "--epochs=1", "--set=data.skip_invalid=true")
    assert "unreadable image" in out.stderr
