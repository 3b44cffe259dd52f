"""Synthetic dataset, COCO reading and validation, geometry and the tf.data pipeline."""

import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from fptflite import codec
from fptflite.data import coco, geometry, pipeline, synthetic
from fptflite.keypoints import COCO_KEYPOINT_NAMES


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            with open(os.path.join(root, f), "rb") as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_synthetic_is_deterministic_and_coco_schema(tmp_path):
    a = synthetic.generate_dataset(str(tmp_path / "a"), 6, 3, seed=7, progress=False)
    synthetic.generate_dataset(str(tmp_path / "b"), 6, 3, seed=7, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    synthetic.generate_dataset(str(tmp_path / "c"), 6, 3, seed=8, progress=False)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    d = json.load(open(a["train_ann"]))
    assert d["categories"][0]["keypoints"] == list(COCO_KEYPOINT_NAMES)
    for ann in d["annotations"]:
        k = np.array(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((k[:, 2] > 0).sum())
        assert set(k[:, 2]) <= {0, 1, 2}
        assert np.all(k[k[:, 2] == 0, :2] == 0)  # unlabelled keypoints are (0, 0, 0)
        assert ann["iscrowd"] == 0 and ann["area"] > 0 and ann["bbox"][2] > 0
    dets = json.load(open(a["val_det"]))
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])


def test_synthetic_completion_marker_is_written_last(tmp_path, monkeypatch):
    """A kill between the val annotations and the detection file leaves no "done" set: the
    next ensure_data generates it again."""
    from fptflite.data import datasets
    from fptflite.data.datasets import DataConfig

    real_write = synthetic.write_json_atomic
    written = []

    def killed_at_detections(path, obj, **kw):
        if path.endswith("person_detections_val.json"):
            raise KeyboardInterrupt("killed")
        written.append(os.path.basename(path))
        real_write(path, obj, **kw)

    cfg = DataConfig(layout="synthetic", data_dir=str(tmp_path / "d"), synthetic_num_train=3,
                     synthetic_num_val=2, synthetic_seed=1)
    monkeypatch.setattr(synthetic, "write_json_atomic", killed_at_detections)
    with pytest.raises(KeyboardInterrupt):
        datasets.ensure_data(cfg)
    assert "person_keypoints_val.json" in written
    assert not synthetic.is_complete(cfg.data_dir)
    monkeypatch.setattr(synthetic, "write_json_atomic",
                        lambda path, obj, **kw: (written.append(os.path.basename(path)),
                                                 real_write(path, obj, **kw)))
    written.clear()
    datasets.ensure_data(cfg)
    assert written[-1] == synthetic.COMPLETION_MARKER and len(written) == 4
    assert os.path.isfile(os.path.join(cfg.data_dir, "person_detections_val.json"))
    written.clear()
    datasets.ensure_data(cfg)  # complete: nothing is generated again
    assert written == []


def test_synthetic_left_side_is_on_image_right_for_upright_figures():
    rng = np.random.default_rng(0)
    k = synthetic.sample_pose(rng, 200.0, np.array([160.0, 120.0]), rotation=0.0)
    for left, right in ((1, 2), (5, 6), (11, 12)):
        assert k[left, 0] > k[right, 0]


def test_synthetic_has_occluded_truncated_and_unlabelled_persons(synthetic_data):
    d = json.load(open(synthetic_data["train_ann"]))
    v = np.array([a["keypoints"][2::3] for a in d["annotations"]])
    assert (v == 1).any() and (v == 2).any() and (v == 0).any()
    assert any(a["num_keypoints"] == 0 for a in d["annotations"])


def test_load_instances_gt_and_detections(synthetic_data):
    inst, report = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"],
                                       0.75)
    d = json.load(open(synthetic_data["val_ann"]))
    expected = [a for a in d["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
    assert len(inst) == len(expected)
    assert report.skipped["no keypoints"] == len(d["annotations"]) - len(expected)
    x, y, w, h = expected[0]["bbox"]
    np.testing.assert_allclose(inst[0].center, [x + w / 2, y + h / 2])
    assert inst[0].size[0] / inst[0].size[1] == pytest.approx(0.75)
    assert max(inst[0].size[0] / 1.25, inst[0].size[1] / 1.25 * 0.75) == pytest.approx(
        max(w, h * 0.75))
    dets, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75,
                                  det_file=synthetic_data["val_det"], det_score_threshold=0.3)
    all_dets = json.load(open(synthetic_data["val_det"]))
    assert len(dets) == sum(det["score"] >= 0.3 for det in all_dets)


def test_load_instances_real_coco_sample(coco_sample):
    inst, report = coco.load_instances(coco_sample["ann_file"], coco_sample["image_dir"], 0.75)
    assert len(inst) == 12 and report.skipped["no keypoints"] == 2
    dets, _ = coco.load_instances(coco_sample["ann_file"], coco_sample["image_dir"], 0.75,
                                  det_file=coco_sample["det_file"])
    assert len(dets) == 118


def _write(tmp_path, obj, name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(p)


def _valid(tmp_path):
    img = tmp_path / "images"
    img.mkdir(exist_ok=True)
    (img / "a.jpg").write_bytes(b"x")
    kps = [10.0, 10.0, 2] * 17
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40],
                             "keypoints": kps, "num_keypoints": 17, "iscrowd": 0,
                             "area": 100.0}],
            "categories": [{"id": 1, "name": "person"}]}, str(img)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 0, 40]), r"annotation 5 .*zero"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "not finite"),
    (lambda d: d["annotations"][0].update(keypoints=[500.0, 10.0, 2] * 17),
     "outside the 100x80 image"),
    (lambda d: d["annotations"][0].update(keypoints=[1.0, 1.0] * 17), "17 x"),
    (lambda d: d["images"][0].update(file_name="../escape.jpg"), "escapes"),
    (lambda d: d["images"][0].update(file_name="/etc/passwd"), "escapes"),
    (lambda d: d["images"][0].update(file_name="missing.jpg"), "file not found"),
    (lambda d: d.pop("annotations"), "'annotations'"),
    (lambda d: d["annotations"][0].pop("category_id"), r"annotation 5 .*category_id None"),
    (lambda d: d["annotations"][0].update(category_id="1"), "invalid category_id '1'"),
    (lambda d: d["annotations"][0].update(keypoints=["10", 10.0, 2] * 17),
     r"annotation 5 .*keypoints must be a list of numbers"),
    (lambda d: d["annotations"][0].update(keypoints=[None, 10.0, 2] * 17),
     "keypoints must be a list of numbers"),
    (lambda d: d["annotations"][0].update(bbox=[1, "2", 30, 40]), "bbox must be a list"),
])
def test_bad_annotations_name_file_and_record(tmp_path, mutate, match):
    d, image_dir = _valid(tmp_path)
    mutate(d)
    ann = _write(tmp_path, d)
    with pytest.raises(coco.DataError, match=match) as e:
        coco.load_instances(ann, image_dir, 0.75)
    assert "ann.json" in str(e.value)


def _two_images(tmp_path):
    """A valid annotation file of two images (ids 1, 2) with one person each (5, 6)."""
    d, image_dir = _valid(tmp_path)
    (tmp_path / "images" / "b.jpg").write_bytes(b"x")
    d["images"].append({"id": 2, "file_name": "b.jpg", "width": 100, "height": 80})
    d["annotations"].append(dict(d["annotations"][0], id=6, image_id=2))
    return d, image_dir


# Each bad `images` entry of image 1 (index 0): the message names the file and the record,
# and with skip_invalid the entry and the persons of its image are counted and skipped.
@pytest.mark.parametrize("mutate,match,unknown_id", [
    (lambda d: d["images"][0].pop("id"), r"image entry 0: missing or non-integer id None",
     True),
    (lambda d: d["images"][0].update(id="1"), r"image entry 0: missing or non-integer id '1'",
     True),
    (lambda d: d["images"][0].update(id=1.0), r"image entry 0: missing or non-integer id 1\.0",
     True),
    (lambda d: d["images"].__setitem__(0, "a.jpg"), r"image entry 0: expected a JSON object",
     True),
    (lambda d: d["images"][0].pop("file_name"),
     r"image entry 0 \(id 1\): missing or invalid file_name None", False),
    (lambda d: d["images"][0].update(file_name=7),
     r"image entry 0 \(id 1\): missing or invalid file_name 7", False),
    (lambda d: d["images"][0].update(file_name=""),
     r"image entry 0 \(id 1\): missing or invalid file_name ''", False),
    (lambda d: d["images"][0].update(width="100"),
     r"image entry 0 \(id 1\): width must be a positive number, got '100'", False),
    (lambda d: d["images"][0].update(width=None),
     r"image entry 0 \(id 1\): width must be a positive number, got None", False),
    (lambda d: d["images"][0].update(height=0),
     r"image entry 0 \(id 1\): height must be a positive number, got 0", False),
    (lambda d: d["images"][0].update(height=-80), "height must be a positive number", False),
    (lambda d: d["images"][0].update(height=float("inf")), "height must be a positive", False),
    (lambda d: d["images"][0].update(width=True), "width must be a positive number", False),
    (lambda d: d["images"].append({"id": 1, "file_name": "b.jpg", "width": 9, "height": 9}),
     r"image entry 2 \(id 1\): duplicate id, also that of image entry 0", False),
    (lambda d: d["images"][0].update(file_name="../escape.jpg"), "image 1: .*escapes", False),
])
def test_bad_image_entries_name_file_and_record(tmp_path, mutate, match, unknown_id):
    d, image_dir = _two_images(tmp_path)
    mutate(d)
    ann = _write(tmp_path, d)
    with pytest.raises(coco.DataError, match=match) as e:
        coco.load_instances(ann, image_dir, 0.75)
    assert str(e.value).startswith(f"{ann}, image ")
    for det_file in (None, _write(tmp_path, [
            {"image_id": i, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9}
            for i in (1, 2)], "dets.json")):
        inst, report = coco.load_instances(ann, image_dir, 0.75, det_file=det_file,
                                           skip_invalid=True)
        assert [(i.image_id, i.image_path) for i in inst] == [(2, f"{image_dir}/b.jpg")]
        person = "unknown image id" if unknown_id else "person on an invalid image entry"
        assert dict(report.skipped) == {"invalid image entry": 1, person: 1}
        assert report.kept == 1


def test_image_entries_without_size_skip_the_range_check_only(tmp_path):
    d, image_dir = _two_images(tmp_path)
    for im in d["images"]:
        del im["width"], im["height"]
    d["annotations"][0]["keypoints"] = [500.0, 10.0, 2] * 17  # outside 100x80, now unknown
    inst, _ = coco.load_instances(_write(tmp_path, d), image_dir, 0.75)
    assert [i.ann_id for i in inst] == [5, 6]


def test_load_coco_validates_image_entries(tmp_path):
    d, _ = _two_images(tmp_path)
    d["images"][1]["id"] = 1
    with pytest.raises(coco.DataError, match=r"ann.json, image entry 1 \(id 1\): duplicate"):
        coco.load_coco(_write(tmp_path, d))
    d["images"][1].pop("id")
    with pytest.raises(coco.DataError, match=r"ann.json, image entry 1: missing or non-int"):
        coco.load_coco(_write(tmp_path, d))


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(coco.DataError, match="not valid JSON"):
        coco.load_instances(_write(tmp_path, "{not json"), str(tmp_path), 0.75)
    with pytest.raises(coco.DataError, match="not found: .*nope.json"):
        coco.load_instances(str(tmp_path / "nope.json"), str(tmp_path), 0.75)


def test_bad_detection_files(tmp_path):
    d, image_dir = _valid(tmp_path)
    ann = _write(tmp_path, d)
    det = _write(tmp_path, {"image_id": 1}, "dets.json")
    with pytest.raises(coco.DataError, match="dets.json: expected a JSON list"):
        coco.load_instances(ann, image_dir, 0.75, det_file=det)
    good = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 5], "score": 0.9}
    for bad, match in (({"bbox": [0, 0, 0, 5]}, "detection 1: bbox .* zero"),
                       ({"image_id": 7}, "detection 1: image_id 7 is not in"),
                       ({"score": "0.9"}, "detection 1: score must be a list of numbers"),
                       ({"score": None}, "detection 1: score"),
                       ({"category_id": None}, "detection 1: missing or invalid category_id")):
        det = _write(tmp_path, [good, {**good, **bad}], "dets.json")
        with pytest.raises(coco.DataError, match=match) as e:
            coco.load_instances(ann, image_dir, 0.75, det_file=det)
        assert "dets.json" in str(e.value)
        inst, report = coco.load_instances(ann, image_dir, 0.75, det_file=det,
                                           skip_invalid=True)
        assert len(inst) == 1 and sum(report.skipped.values()) == 1
    det = _write(tmp_path, [good, {k: v for k, v in good.items() if k != "score"}], "d.json")
    with pytest.raises(coco.DataError, match="d.json, detection 1: needs image_id"):
        coco.load_instances(ann, image_dir, 0.75, det_file=det)


def test_skip_invalid_counts_instead_of_raising(tmp_path):
    d, image_dir = _valid(tmp_path)
    bad = dict(d["annotations"][0], id=6, bbox=[0, 0, -1, 5])
    d["annotations"].append(bad)
    inst, report = coco.load_instances(_write(tmp_path, d), image_dir, 0.75, skip_invalid=True)
    assert len(inst) == 1 and report.skipped["invalid annotation"] == 1


def test_corrupt_image_is_found_and_dropped(synthetic_data, tmp_path):
    inst, report = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"],
                                       0.75)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    inst[0].image_path = str(bad)
    assert coco.check_image(str(bad)) == "cannot be decoded as an image"
    kept = coco.drop_unreadable_images(inst, report)
    assert len(kept) == len(inst) - sum(i.image_path == str(bad) for i in inst)
    assert report.skipped["unreadable image"] >= 1


def test_crop_matrix_tf_equals_numpy(rng):
    for _ in range(5):
        c, s = rng.uniform(50, 300, 2), np.array([120.0, 160.0]) * rng.uniform(0.5, 2)
        rot, flip = rng.uniform(-45, 45), bool(rng.integers(2))
        ref = geometry.crop_matrix(c, s, (256, 192), rot, flip)
        got = pipeline.crop_matrix_tf(tf.constant(c, tf.float32), tf.constant(s, tf.float32),
                                      (256, 192), rot, flip).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)
    m = geometry.crop_matrix([100, 50], [96, 128], (256, 192))
    # The box centre lands on the crop centre; the round trip is exact.
    np.testing.assert_allclose(geometry.apply_affine(m, [100, 50]), [95.5, 127.5])
    pts = rng.uniform(0, 200, (10, 2))
    np.testing.assert_allclose(
        geometry.crop_to_image(geometry.apply_affine(m, pts), [100, 50], [96, 128], (256, 192)),
        pts)


def test_encode_tf_equals_numpy(rng):
    kps = np.concatenate([rng.uniform(-30, 220, (17, 2)), rng.integers(0, 3, (17, 1))], 1)
    t_np, w_np = codec.encode_keypoints(kps, (64, 48), 4)
    t_tf, w_tf = codec.encode_keypoints_tf(tf.constant(kps, tf.float32), (64, 48), 4)
    np.testing.assert_array_equal(w_tf.numpy(), w_np)
    np.testing.assert_allclose(t_tf.numpy(), t_np, atol=1e-5)


def test_eval_crop_matches_cv2_warp(synthetic_data):
    import cv2
    inst, _ = coco.load_instances(synthetic_data["val_ann"], synthetic_data["val_images"], 0.75)
    images, idx = next(iter(pipeline.eval_dataset(inst, (256, 192), 4)))
    for j in range(4):
        i = inst[int(idx[j])]
        img = cv2.cvtColor(cv2.imread(i.image_path), cv2.COLOR_BGR2RGB).astype(np.float32)
        m = geometry.crop_matrix(i.center, i.size, (256, 192))
        ref = cv2.warpAffine(img, m[:2], (192, 256), flags=cv2.INTER_LINEAR)
        # cv2 interpolates with 5-bit fixed-point weights; TF in float.
        assert np.abs(images[j].numpy() - ref).mean() < 1.5


def test_warped_crops_stay_within_the_pixel_range():
    # Bilinear weights in float32 can sum to a hair over 1: unclipped, 1.3% of these warps of
    # a white image reach 255.00002, which widened the QAT input range past [0, 255].
    import cv2

    ok, png = cv2.imencode(".png", np.full((40, 30, 3), 255, np.uint8))
    contents = tf.constant(png.tobytes())
    read = tf.function(lambda m: tf.reduce_max(pipeline._read_crop(contents, m, (32, 32))))
    rng = np.random.default_rng(0)
    peaks = [float(read(pipeline.crop_matrix_tf(
        rng.uniform(10, 25, 2).astype(np.float32), rng.uniform(5, 40, 2).astype(np.float32),
        (32, 32), np.float32(rng.uniform(-45, 45)), False))) for _ in range(500)]
    assert max(peaks) == 255.0


def test_train_targets_match_numpy_geometry_without_augmentation(synthetic_data):
    inst, _ = coco.load_instances(synthetic_data["train_ann"], synthetic_data["train_images"],
                                  0.75)
    ds = pipeline.train_dataset(inst, (256, 192), 8, epoch=0, seed=5,
                                augment=pipeline.NO_AUGMENTATION)
    images, targets, weights = next(iter(ds))
    assert images.shape == (8, 256, 192, 3) and targets.shape == (8, 64, 48, 17)
    assert weights.shape == (8, 1, 1, 17)
    order = pipeline.epoch_order(len(inst), 8, 0, 5)
    for j, i in enumerate(order[:8]):
        m = geometry.crop_matrix(inst[i].center, inst[i].size, (256, 192))
        k = inst[i].keypoints.copy()
        k[:, :2] = geometry.apply_affine(m, k[:, :2])
        t_ref, w_ref = codec.encode_keypoints(k, (64, 48), 4)
        np.testing.assert_array_equal(weights[j, 0, 0].numpy(), w_ref)
        np.testing.assert_allclose(targets[j].numpy(), t_ref, atol=2e-3)


def test_augmented_targets_are_consistent(synthetic_data):
    inst, _ = coco.load_instances(synthetic_data["train_ann"], synthetic_data["train_images"],
                                  0.75)
    _, targets, weights = next(iter(pipeline.train_dataset(inst, (256, 192), 16, 0, seed=5)))
    peaks = targets.numpy().max(axis=(1, 2))  # [B, K]
    w = weights.numpy()[:, 0, 0]
    assert np.all(peaks[w == 0] == 0)
    assert np.all(peaks[w > 0] > 0.01) and np.median(peaks[w > 0]) > 0.9


def test_train_dataset_is_deterministic_and_skip_resumes_exactly(synthetic_data):
    inst, _ = coco.load_instances(synthetic_data["train_ann"], synthetic_data["train_images"],
                                  0.75)
    full = [b for b in pipeline.train_dataset(inst, (64, 64), 4, epoch=2, seed=1)]
    again = [b for b in pipeline.train_dataset(inst, (64, 64), 4, epoch=2, seed=1)]
    resumed = [b for b in pipeline.train_dataset(inst, (64, 64), 4, epoch=2, seed=1,
                                                 skip_batches=3)]
    assert len(full) == pipeline.steps_per_epoch(len(inst), 4) == len(resumed) + 3
    for a, b in zip(full, again, strict=True):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    for a, b in zip(full[3:], resumed, strict=True):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    other = next(iter(pipeline.train_dataset(inst, (64, 64), 4, epoch=3, seed=1)))
    assert not np.array_equal(other[0].numpy(), full[0][0].numpy())


def test_shards_partition_the_epoch():
    orders = [pipeline.epoch_order(103, 4, 1, 0, 3, s) for s in range(3)]
    assert len({len(o) for o in orders}) == 1
    allidx = np.concatenate(orders)
    assert len(set(allidx)) == len(allidx)


def test_half_body_box_by_hand():
    kps = np.zeros((17, 3), np.float32)
    kps[:, 2] = 2
    kps[:11, :2] = [[100 + 2 * i, 50 + 3 * i] for i in range(11)]  # head and arms
    kps[11:, :2] = [[300, 400]] * 6  # hips and legs far away
    center, size = pipeline._half_body(tf.constant(kps), tf.zeros(2), tf.ones(2), 0.75,
                                       tf.constant(0.0))  # u < 0.5: upper body
    # Upper-body box: x 100..120, y 50..80 -> centre (110, 65); w=20, h=30 -> h*0.75 = 22.5.
    np.testing.assert_allclose(center.numpy(), [110, 65])
    np.testing.assert_allclose(size.numpy(), [22.5 * 1.5, 30 * 1.5])
    center, _ = pipeline._half_body(tf.constant(kps), tf.zeros(2), tf.ones(2), 0.75,
                                    tf.constant(0.9))  # lower body
    np.testing.assert_allclose(center.numpy(), [300, 400])


def test_atomic_writes_replace_whole_files_with_normal_permissions(tmp_path):
    from fptflite.utils import io as io_lib

    path = tmp_path / "out.json"
    io_lib.write_json_atomic(str(path), {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would, not mkstemp's 0600
    with pytest.raises(RuntimeError), io_lib.atomic_path(str(path)) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}  # the old file is intact
    assert os.listdir(tmp_path) == ["out.json"]  # and no temporary file is left
