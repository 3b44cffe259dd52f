"""An MPII model through the whole chain, as a user runs it: train (synthetic MPII), QAT,
int8 PTQ and QAT files (op audit PASS), ``evaluate_tflite --model=RUN`` with PCKh parity
(ok by default, exit 1 when a gain of 5 points is demanded), and ``export_android`` refusing
a 16-keypoint model. Every stage is its binary in a subprocess, reading the run's own data
through the dataset registry (the MPII reader, never COCO's)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str, expect: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == expect, (args, out.stdout[-3000:], out.stderr[-3000:])
    return out


@pytest.fixture(scope="module")
def mpii_run(tmp_path_factory):
    """A small mpii_demo run (8 epochs on 300 synthetic images: mean PCKh@0.5 about 0.4,
    1 min here) with one epoch of QAT fine-tuning."""
    root = tmp_path_factory.mktemp("mpii_chain")
    run = str(root / "run")
    _run("training.train", "--config=mpii_demo", f"--run_dir={run}",
         f"--data_dir={root / 'data'}", "--epochs=8", "--batch_size=16",
         "--set=data.synthetic_num_train=300", "--set=data.synthetic_num_val=40",
         "--set=eval_flip_test=false")
    _run("conversion.qat", f"--model={run}", "--epochs=1")
    return root, run


@pytest.mark.slow
def test_mpii_model_converts_and_keeps_pckh_parity(mpii_run):
    root, run = mpii_run
    out_dir = str(root / "tflite")
    conv = _run("conversion.convert", f"--model={run}", f"--out_dir={out_dir}",
                "--formats=int8_ptq,int8_qat", "--num_calibration=32")
    files = {f: os.path.join(out_dir, f"fasterpose_mnv2_050_{f}.tflite")
             for f in ("int8_ptq", "int8_qat")}
    for fmt, path in files.items():
        with open(os.path.splitext(path)[0] + ".audit.json") as f:
            audit = json.load(f)
        assert audit["passed"], (fmt, audit["problems"])
        assert audit["output"]["shape"][-1] == 16  # MPII's joints
    assert "converted: int8_ptq, int8_qat" in conv.stdout

    with open(os.path.join(run, "config.json")) as f:
        data = json.load(f)["data"]
    val_ann = os.path.join(data["data_dir"], "annotations", "mpii_val.json")
    val_images = os.path.join(data["data_dir"], "images", "val")
    ev = [f"--ann_file={val_ann}", f"--image_dir={val_images}", f"--model={run}",
          "--num_threads=2"]
    # 40 val persons make mean PCKh coarse: over three runs of this recipe the int8 files
    # came within -0.58 .. +0.44 points of the float model, so the ok case gets 2 points.
    ok = _run("conversion.evaluate_tflite", f"--tflite={files['int8_ptq']}", *ev,
              f"--out_dir={root / 'eval'}", "--max_drop=2")
    with open(root / "eval" / "fasterpose_mnv2_050_int8_ptq" / "parity.json") as f:
        parity = json.load(f)
    with open(root / "eval" / "fasterpose_mnv2_050_int8_ptq" / "metrics.json") as f:
        file_stats = json.load(f)
    with open(root / "eval" / "float" / "metrics.json") as f:
        float_stats = json.load(f)
    # The parity report's numbers are the two PCKh evaluations' own mean PCKh@0.5.
    assert parity["metric"] == "PCKh"
    assert parity["candidate_score"] == pytest.approx(file_stats["mean"])
    assert parity["reference_score"] == pytest.approx(float_stats["mean"])
    assert parity["score_delta_points"] == pytest.approx(
        100 * (file_stats["mean"] - float_stats["mean"]))
    assert file_stats["mean"] > 0.2  # a model that predicts joints, not a random one
    assert "parity ok" in ok.stdout and "PCKh" in ok.stdout
    print(ok.stdout[-1500:])
    failed = _run("conversion.evaluate_tflite", f"--tflite={files['int8_qat']}", *ev,
                  f"--out_dir={root / 'eval_gain'}", "--max_drop=-5", expect=1)
    print(failed.stderr[-400:])
    assert "parity FAILED" in failed.stderr and "PCKh" in failed.stderr


@pytest.mark.slow
def test_export_android_refuses_a_16_keypoint_model(mpii_run):
    root, run = mpii_run
    out = _run("conversion.export_android", f"--model={run}", "--int8=ptq",
               f"--out_dir={root / 'assets'}", expect=2)
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error: {os.path.join(run, 'best.keras')} predicts 16 keypoints, but the Android "
        "drop-in replaces MoveNet, whose contract is COCO's 17 keypoints (an MPII model has "
        "16)"), out.stderr[-1000:]
    assert not os.path.exists(root / "assets")
