"""The whole main job end to end on tiny settings (what make demo runs, scaled down)."""

import json
import os

import cv2
import pytest

from fptflite.tasks import main_job


@pytest.mark.slow
def test_main_job_end_to_end(synthetic_data, tmp_path):
    out = tmp_path / "demo"
    report = main_job.run(main_job.MainJobOptions(
        out_dir=str(out), config="demo", data_dir=synthetic_data["root"],
        overrides=("model=fasterpose_mnv2_035", "input_size=[64,64]", "neck_channels=16",
                   "epochs=1", "batch_size_per_replica=8", "eval_flip_test=false"),
        qat_epochs=1, num_calibration=16, num_threads=2,
        android_assets_dir=str(tmp_path / "assets")))
    on_disk = json.load(open(out / "report.json"))
    for key in ("float_ap", "int8_qat_ap", "int8_ptq_ap"):
        assert on_disk[key] == report[key]
    # The report's APs are the evaluator's metrics files, written from COCOeval.
    float_metrics = json.load(open(out / "eval" / "float32" / "float" / "metrics.json"))
    assert on_disk["float_ap"] == float_metrics["AP"]
    for fmt in ("int8_qat", "int8_ptq", "float32"):
        metrics = json.load(open(out / "eval" / fmt / "metrics.json"))
        assert on_disk[f"{fmt}_ap" if fmt != "float32" else "float32_tflite_ap"] == metrics["AP"]
        assert os.path.isfile(on_disk["tflite"][fmt]["path"])
        assert on_disk["tflite"][fmt]["audit_passed"]
    # float32 TFLite reproduces the Keras model's AP.
    assert abs(on_disk["float32_tflite_ap"] - on_disk["float_ap"]) < 1e-3
    for png in on_disk["pictures"].values():
        img = cv2.imread(png)
        assert img is not None and img.shape[0] > 100
    assert "| int8_qat |" in (out / "report.md").read_text()
    assert (tmp_path / "assets" / "fasterpose_int8.tflite").is_file()
    assert json.load(open(tmp_path / "assets" / "fasterpose_int8.json"))["format"] == "int8_qat"
