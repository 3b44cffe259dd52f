"""MPII: PCKh on hand-worked cases, reading the JSON layout (real sample and bad input), the
synthetic MPII set, and the metric chosen by the dataset."""

import json

import numpy as np
import pytest

from fptflite.data import datasets, mpii
from fptflite.data.coco import DataError
from fptflite.data.datasets import DataConfig
from fptflite.evaluation import coco_eval, metrics
from fptflite.evaluation import mpii as mpii_eval
from fptflite.keypoints import (
    MPII_FLIP_PAIRS,
    MPII_KEYPOINT_NAMES,
    MPII_PCKH_GROUPS,
    flip_permutation,
)

J = {n: i for i, n in enumerate(MPII_KEYPOINT_NAMES)}


def _gt(n=2):
    rng = np.random.default_rng(0)
    return rng.uniform(50, 400, (n, 16, 2))


def test_joint_definitions():
    assert len(MPII_KEYPOINT_NAMES) == 16
    assert MPII_KEYPOINT_NAMES[9] == "head_top" and MPII_KEYPOINT_NAMES[0] == "right_ankle"
    for a, b in MPII_FLIP_PAIRS:
        assert MPII_KEYPOINT_NAMES[a].replace("left", "right") == MPII_KEYPOINT_NAMES[b]
    perm = flip_permutation(16)
    assert perm[J["left_wrist"]] == J["right_wrist"] and perm[J["pelvis"]] == J["pelvis"]
    assert MPII_PCKH_GROUPS["head"] == (J["head_top"],)


def test_pckh_threshold_is_inclusive():
    gt = _gt(1)
    head = np.array([20.0])  # threshold 0.5 -> 10 px
    pred = gt.copy()
    pred[0, J["left_wrist"], 0] += 10.0  # exactly at the threshold: correct
    pred[0, J["right_wrist"], 1] += 10.0 + 1e-6  # just past it: wrong
    stats = mpii_eval.pckh(pred, gt, np.ones((1, 16), bool), head)
    assert stats["wrist"] == 0.5
    assert stats["head"] == 1.0
    assert stats["mean"] == pytest.approx(13 / 14)  # 14 scored joints (no pelvis, thorax)
    # At 0.1 (2 px) both wrists miss, the other 12 scored joints are exact.
    assert stats["mean@0.1"] == pytest.approx(12 / 14)


def test_pckh_invisible_joints_and_group_means():
    gt = _gt(3)
    head = np.array([10.0, 20.0, 40.0])
    vis = np.ones((3, 16), bool)
    pred = gt.copy()
    # Left knee: person 0 wrong, person 1 right, person 2 invisible (its huge error ignored).
    pred[0, J["left_knee"]] += [6.0, 0.0]  # 6 > 5
    pred[2, J["left_knee"]] += [500.0, 0.0]
    vis[2, J["left_knee"]] = False
    # Right knee: all three wrong.
    pred[:, J["right_knee"]] += [[0, 6.0], [0, 11.0], [0, 21.0]]
    # Pelvis and thorax errors must not count in the mean.
    pred[:, J["pelvis"]] += 1000.0
    pred[:, J["thorax"]] += 1000.0
    stats = mpii_eval.pckh(pred, gt, vis, head)
    assert stats["knee"] == pytest.approx(0.5 * (1 / 2 + 0 / 3))  # mean of per-joint rates
    # Mean pools visible joints: 14 * 3 - 1 invisible = 41 scored, 1 + 3 wrong.
    assert stats["mean"] == pytest.approx(37 / 41)
    assert stats["ankle"] == 1.0 and set(stats) == set(mpii_eval.PCKH_NAMES)
    vis[:, J["left_ankle"]] = False
    vis[:, J["right_ankle"]] = False
    assert np.isnan(mpii_eval.pckh(pred, gt, vis, head)["ankle"])


def test_pckh_bad_input():
    gt = _gt(2)
    with pytest.raises(ValueError, match=r"record\(s\) \[1\]"):
        mpii_eval.pckh(gt, gt, np.ones((2, 16)), np.array([5.0, 0.0]))
    with pytest.raises(ValueError, match="16, 2"):
        mpii_eval.pckh(gt[:, :15], gt[:, :15], np.ones((2, 15)), np.ones(2))


def test_head_size_is_0_6_diagonal():
    boxes = np.array([[[10.0, 20.0], [40.0, 60.0]]])  # 30 x 40 -> diagonal 50
    assert mpii.head_sizes(boxes)[0] == pytest.approx(30.0)


def test_reads_real_sample(mpii_sample):
    ann = mpii_sample["ann_file"]
    with open(ann) as f:
        records = json.load(f)
    instances, report = mpii.load_mpii(ann, mpii_sample["image_dir"], 1.0)
    assert report.kept == len(records) == 5
    for inst, rec in zip(instances, records, strict=True):
        vis = np.array(rec["joints_vis"]) > 0
        np.testing.assert_allclose(inst.keypoints[vis, :2], np.array(rec["joints"])[vis] - 1)
        assert np.all(inst.keypoints[vis, 2] == 2) and np.all(inst.keypoints[~vis] == 0)
        s = rec["scale"]
        # SimpleBaseline/HRNet: centre + 15 * scale down, a 200 * scale square, x 1.25.
        np.testing.assert_allclose(inst.center, [rec["center"][0] - 1,
                                                 rec["center"][1] - 1 + 15 * s])
        np.testing.assert_allclose(inst.size, [250 * s, 250 * s])
        assert inst.head_box is None
    with pytest.raises(ValueError, match="5 have none: record 0"):
        mpii_eval.instance_head_sizes(instances)
    assert datasets.file_reader(ann) == "mpii"


def test_head_boxes_from_mat_file(mpii_sample, tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="reading .mat files needs scipy")
    # gt_valid.mat layout: headboxes_src [2 corners, 2 coords, N], 1-based pixels.
    boxes = np.stack([[[100.0 + i, 50.0], [130.0 + i, 90.0]] for i in range(5)], axis=-1)
    mat = tmp_path / "gt_valid.mat"
    scipy_io.savemat(str(mat), {"headboxes_src": boxes})
    instances, _ = mpii.load_mpii(mpii_sample["ann_file"], mpii_sample["image_dir"], 1.0,
                                  head_boxes_mat=str(mat))
    np.testing.assert_allclose(instances[2].head_box, [[101.0, 49.0], [131.0, 89.0]])
    np.testing.assert_allclose(mpii_eval.instance_head_sizes(instances), 30.0)  # 0.6 * 50
    with pytest.raises(DataError, match="5 head boxes for 4 records"):
        mpii.load_head_boxes_mat(str(mat), 4)


def _write(tmp_path, records, images=("a.jpg",)):
    import cv2

    for name in images:
        cv2.imwrite(str(tmp_path / name), np.zeros((100, 200, 3), np.uint8))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(records))
    return str(path)


def _record(**kw):
    rec = {"image": "a.jpg", "center": [100.0, 50.0], "scale": 0.4,
           "joints": [[50.0 + 5 * i, 40.0] for i in range(16)], "joints_vis": [1] * 16,
           "head_box": [90.0, 10.0, 110.0, 30.0]}
    rec.update(kw)
    return rec


@pytest.mark.parametrize("field,value,match", [
    ("scale", 0.0, "'scale' must be > 0"),
    ("scale", -1.0, "'scale' must be > 0"),
    ("joints", None, "'joints'"),
    ("joints", [[1.0, 2.0]] * 15, "'joints'"),
    ("joints_vis", [2] * 16, "0 or 1"),
    ("center", ["1", "2"], "'center'"),
    ("head_box", [10.0, 10.0, 5.0, 30.0], "x2 > x1"),
])
def test_bad_records_name_file_and_record(tmp_path, field, value, match):
    ann = _write(tmp_path, [_record(), _record(**{field: value})])
    with pytest.raises(DataError, match=match) as e:
        mpii.load_mpii(ann, str(tmp_path), 1.0)
    assert "record 1" in str(e.value) and ann in str(e.value)
    instances, report = mpii.load_mpii(ann, str(tmp_path), 1.0, skip_invalid=True)
    assert len(instances) == 1 and report.skipped["invalid record"] == 1


def test_joints_outside_image_missing_head_box_and_bad_images(tmp_path):
    joints = [[50.0 + 5 * i, 40.0] for i in range(16)]
    joints[3] = [250.0, 40.0]  # the image is 200 wide (1-based 250 -> 0-based 249)
    ann = _write(tmp_path, [_record(joints=joints), _record(head_box=None),
                            _record(image="missing.jpg"), _record(image="bad.jpg")])
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="record 2.*not found"):
        mpii.load_mpii(ann, str(tmp_path), 1.0)
    instances, report = mpii.load_mpii(ann, str(tmp_path), 1.0, skip_invalid=True)
    assert report.skipped["invalid record"] == 2 and len(instances) == 2
    assert instances[0].keypoints[3, 2] == 0 and (instances[0].keypoints[:, 2] == 2).sum() == 15
    assert report.skipped["visible joints outside the image (set to v=0)"] == 1
    with pytest.raises(ValueError, match=r"1 have none: record 1 \("):
        mpii_eval.instance_head_sizes(instances)
    np.testing.assert_allclose(instances[0].head_box, [[89, 9], [109, 29]])
    bad_only = tmp_path / "bad.json"
    bad_only.write_text(json.dumps([_record(image="bad.jpg")]))
    with pytest.raises(DataError, match="record 0.*image header of .*bad.jpg"):
        mpii.load_mpii(str(bad_only), str(tmp_path), 1.0)


def test_synthetic_mpii_oracle_scores_perfect_pckh(tmp_path):
    data = DataConfig(layout="synthetic_mpii", data_dir=str(tmp_path), synthetic_num_train=4,
                      synthetic_num_val=6, synthetic_seed=1)
    paths = datasets.ensure_data(data)
    instances, report = datasets.load_split(data, "val", 1.0)
    assert report.kept >= 6
    kps = np.stack([i.keypoints for i in instances])
    # The mapping: head top above the upper neck (figures are mostly upright), thorax midway
    # between the shoulders, head boxes around the head joints.
    assert np.mean(kps[:, J["head_top"], 1] < kps[:, J["upper_neck"], 1]) > 0.7
    for inst in instances:
        k = inst.keypoints
        if k[[J["left_shoulder"], J["right_shoulder"], J["thorax"]], 2].all():
            np.testing.assert_allclose(
                k[J["thorax"], :2], k[[J["left_shoulder"], J["right_shoulder"]], :2].mean(0),
                atol=0.02)
    metric = metrics.get_metric(data.dataset.metric)
    stats, _ = metric.evaluate(coco_eval.oracle_predictor(instances, (128, 128)), instances,
                               paths["val_ann"], (128, 128), progress=False)
    assert stats["mean"] == 1.0 and stats["mean@0.1"] > 0.97
    assert "head | shoulder" in metric.format_stats(stats, "")
    assert metric.value(stats) == 1.0 and metric.name == "PCKh"


@pytest.mark.slow
def test_trainer_trains_and_scores_mpii(tmp_path):
    """The trainer reads the MPII layout, keeps the best by mean PCKh and writes PCKh stats;
    the registry's metric reproduces the final numbers from the export."""
    from fptflite.quantization.model_io import load_model
    from fptflite.tasks import configs, trainer

    cfg = configs.apply_overrides(configs.get_config("mpii_demo"), [
        f"data.data_dir={tmp_path / 'data'}", "data.synthetic_num_train=16",
        "data.synthetic_num_val=4", "epochs=1", "batch_size_per_replica=8",
        "eval_flip_test=false"])
    result = trainer.train(cfg, str(tmp_path / "model"))
    assert set(result.stats) == set(mpii_eval.PCKH_NAMES)
    assert result.best_ap == pytest.approx(result.stats["mean"])
    with open(tmp_path / "model" / "final_metrics.json") as f:
        assert json.load(f)["best_AP"] == pytest.approx(result.stats["mean"])
    paths = cfg.data.paths()
    val, _ = datasets.load_split(cfg.data, "val", 1.0)
    model = load_model(str(tmp_path / "model" / "final.keras"))
    again, _ = metrics.get_metric("mpii").evaluate(
        coco_eval.keras_predictor(model), val, paths["val_ann"], cfg.input_size,
        progress=False)
    for k, v in result.stats.items():
        assert again[k] == pytest.approx(v, nan_ok=True), k


def test_registry_reads_mpii_splits_for_calibration(tmp_path):
    """PTQ/QAT calibration of an MPII run reads its split with the MPII reader (the COCO
    reader fails on the JSON list with "expected a JSON dict at the top level")."""
    data = DataConfig(layout="synthetic_mpii", data_dir=str(tmp_path), synthetic_num_train=3,
                      synthetic_num_val=2, synthetic_seed=2)
    crops = datasets.split_calibration_crops(data, (64, 64), "train", num=5, seed=0)
    train, _ = datasets.load_split(data, "train", 1.0)
    assert crops.shape == (min(5, len(train)), 64, 64, 3) and crops.dtype == np.float32
    assert 0 <= crops.min() and crops.max() <= 255 and crops.std() > 5
    assert data.dataset.reader == data.dataset.metric == "mpii"
    assert data.dataset.num_keypoints == 16
    with pytest.raises(ValueError, match="unknown data layout 'mpi'"):
        DataConfig(layout="mpi", data_dir="x").paths()
    with pytest.raises(ValueError, match="no person detections"):
        DataConfig(layout="mpii", data_dir="x", use_detections=True).paths()
