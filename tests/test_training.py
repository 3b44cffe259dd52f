"""Training: strict configs, kill -9 resume equality, multi-worker replicas, bad images."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

from fptflite.tasks import configs, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=demo", "--set=model=fasterpose_mnv2_035", "--set=input_size=[64,64]",
        "--batch_size=8", "--epochs=2", "--set=checkpoint_every_steps=2",
        "--set=eval_every_epochs=0", "--set=eval_flip_test=false", "--deterministic"]


def _train_cli(data_dir, model_dir, *extra, check=True):
    out = subprocess.run([sys.executable, "-m", "training.train", f"--data_dir={data_dir}",
                          f"--model_dir={model_dir}", *TINY, *extra],
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


@pytest.mark.slow
def test_kill9_mid_epoch_resumes_to_identical_weights(synthetic_data, tmp_path):
    reference = tmp_path / "uninterrupted"
    out = _train_cli(synthetic_data["root"], reference)
    assert (reference / "config.json").is_file() and (reference / "tensorboard").is_dir()
    crashed = tmp_path / "crashed"
    out = _train_cli(synthetic_data["root"], crashed, "--kill_after_steps=13", check=False)
    assert out.returncode == -9  # SIGKILL: no cleanup ran
    assert not (crashed / "final.keras").exists()
    out = _train_cli(synthetic_data["root"], crashed)
    log = out.stderr + out.stdout
    # 9 steps/epoch, checkpoints every 2 steps: the kill after global step 13 comes before
    # that step's checkpoint, so the run resumes from ckpt-11 = epoch index 1, step 2.
    assert "ckpt-11: epoch 1, step 2 of 9" in log, log[-3000:]
    for a, b in zip(_weights(reference), _weights(crashed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A finished run re-run with the same command trains nothing more.
    out = _train_cli(synthetic_data["root"], crashed)
    assert "Epoch" not in out.stdout


def test_resume_refuses_a_different_config(synthetic_data, tmp_path):
    cfg = configs.get_config("demo")
    cfg = configs.override(cfg, "data.data_dir", synthetic_data["root"])
    trainer.check_config(cfg, str(tmp_path), is_chief=True)
    with pytest.raises(ValueError, match="another config"):
        trainer.check_config(configs.override(cfg, "learning_rate", "0.5"), str(tmp_path), True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_replicas_end_identical(synthetic_data, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                     "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(REPO, "tests", "helpers", "multiworker_train.py"),
             synthetic_data["root"], str(tmp_path / "model"), str(tmp_path / f"w{i}.npz")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert len(w0.files) == len(w1.files) > 100
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k])
    init = keras.models.load_model(str(tmp_path / "model" / "final.keras"), compile=False)
    np.testing.assert_array_equal(init.weights[1].numpy(), w0["arr_1"])  # chief exported it
    assert not any(n.startswith(".worker") for n in os.listdir(tmp_path / "model"))


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
