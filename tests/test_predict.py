"""fptflite.predict: tracking rule, One-Euro filter, the app replica's crop, and the CLI on
images and videos (without TensorFlow), with bad inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fptflite.keypoints import COCO_KEYPOINT_NAMES
from fptflite.serving import app_pipeline, tracking
from fptflite.serving.one_euro import OneEuroFilter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDX = {n: i for i, n in enumerate(COCO_KEYPOINT_NAMES)}


def test_movenet_crop_region_hand_worked():
    kps = np.full((17, 2), 110.0)
    scores = np.full(17, 0.1)
    for name, xy in (("left_hip", (100, 200)), ("right_hip", (120, 200)),
                     ("left_shoulder", (95, 150)), ("right_shoulder", (125, 150)),
                     ("left_wrist", (110, 80)), ("left_ankle", (110, 400))):
        kps[IDX[name]] = xy
    for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder", "left_wrist"):
        scores[IDX[name]] = 0.9
    # centre (110, 200); torso |dy| 50 x 1.9 = 95; body (the wrist, |dy| 120) x 1.2 = 144;
    # the ankle scores below 0.2 and does not count.
    r = tracking.movenet_crop_region(kps, scores, 640, 480)
    assert (r.left, r.top, r.size) == pytest.approx((110 - 144, 200 - 144, 288))
    scores[[IDX["left_shoulder"], IDX["right_shoulder"]]] = 0.1  # torso lost
    r = tracking.movenet_crop_region(kps, scores, 640, 480)
    assert (r.left, r.top, r.size) == (0.0, -80.0, 640.0)  # whole frame, padded square


def test_one_euro_filter():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = 100 + rng.normal(0, 1.0, (300, 17, 2))
    out = np.stack([f(x, i / 30) for i, x in enumerate(noisy)])
    jitter = np.abs(np.diff(noisy, axis=0)).mean()
    jitter_f = np.abs(np.diff(out[30:], axis=0)).mean()
    assert jitter / jitter_f > 5  # alpha = 0.17 at 30 Hz, 1 Hz cutoff
    assert abs(out[30:].mean() - 100) < 0.1
    f = OneEuroFilter(min_cutoff=1.0, beta=1.0)  # a fast ramp passes with little lag
    ramp = [f(np.array([10.0 * i]), i / 30)[0] for i in range(60)]
    assert 10 * 59 - ramp[-1] < 10  # less than one frame behind
    with pytest.raises(ValueError, match="increase"):
        f(np.array([0.0]), 0.0)


def test_app_input_pads_black_and_parse_maps_back():
    frame = np.full((100, 200, 3), 200, np.uint8)
    region = app_pipeline.SquareRegion(-50.0, 0.0, 100.0)  # half outside on the left
    image, snapped = app_pipeline.app_input(frame, region, 10)
    assert image.shape == (10, 10, 3) and image.dtype == np.uint8
    assert (image[:, :4] == 0).all() and (image[:, 6:] == 200).all()
    out = np.zeros((1, 1, 17, 3), np.float32)
    out[0, 0, :, 0], out[0, 0, :, 1], out[0, 0, :, 2] = 0.25, 0.5, 0.8
    xy, scores, person = app_pipeline.parse_output(out, snapped)
    assert xy[0] == pytest.approx((0.0, 25.0)) and person == pytest.approx(0.8)
    r = app_pipeline.whole_frame_region(640, 480)
    assert (r.left, r.top, r.size) == (0.0, -80.0, 640.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny pose .tflite (heatmap output), a non-pose .tflite, an image and videos."""
    import tf_keras as keras

    from fptflite.data import synthetic_video
    from fptflite.models import build_model
    from fptflite.tflite.export import export_formats

    d = tmp_path_factory.mktemp("predict")
    model = build_model("fasterpose_mnv2_035", (64, 64), feature_stride=16, neck_channels=16)
    pose = export_formats(str(d), "pose", ["float32"], model, progress=False)["float32"]["path"]
    inp = keras.Input((64, 64, 3))
    other = keras.Model(inp, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inp)))
    import tensorflow as tf

    other_path = str(d / "classifier.tflite")
    with open(other_path, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(other).convert())
    frames, _ = synthetic_video.frames(12, size=(120, 160), moving=True)
    import cv2

    image = str(d / "frame.png")
    cv2.imwrite(image, cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    video = str(d / "walk.avi")
    synthetic_video.write_video(video, frames)
    data = open(video, "rb").read()
    truncated = str(d / "truncated.avi")
    with open(truncated, "wb") as f:
        f.write(data[:int(len(data) * 0.6)])
    return {"dir": d, "pose": pose, "other": other_path, "image": image, "video": video,
            "truncated": truncated}


def _run(*args):
    """Runs the CLI in a fresh interpreter; returns (exit code, stdout, stderr, tf_loaded)."""
    code = ("import sys, runpy\n"
            f"sys.argv = ['predict', *{list(args)!r}]\n"
            "try:\n    runpy.run_module('fptflite.predict', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print('TF_LOADED', 'tensorflow' in sys.modules, 'RC', rc)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    last = p.stdout.strip().splitlines()[-1].split()
    return int(last[3]), p.stdout, p.stderr, last[1] == "True"


@pytest.mark.slow
def test_predict_image_and_video_without_tensorflow(files):
    d = files["dir"]
    rc, out, err, tf_loaded = _run(f"--model={files['pose']}", f"--image={files['image']}",
                                   f"--out={d}/img_out.png")
    assert rc == 0 and not tf_loaded, err
    results = json.load(open(d / "img_out.json"))
    assert len(results) == 1 and len(results[0]["keypoints"]) == 51
    assert results[0]["frame_index"] == 0 and results[0]["category_id"] == 1
    assert os.path.isfile(d / "img_out.png")
    rc, out, err, tf_loaded = _run(f"--model={files['pose']}", f"--video={files['video']}",
                                   "--track", "--smooth", f"--out={d}/vid_out.avi")
    assert rc == 0 and not tf_loaded, err
    assert out.strip().splitlines()[-2].endswith("frames/s")
    results = json.load(open(d / "vid_out.json"))
    assert [r["frame_index"] for r in results] == list(range(12))
    import cv2

    cap = cv2.VideoCapture(str(d / "vid_out.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


@pytest.mark.slow
def test_predict_bad_inputs(files):
    d = files["dir"]
    junk = d / "junk.jpg"
    junk.write_text("not an image")
    empty = d / "empty.json"
    empty.write_text("[]")
    outside = d / "outside.json"
    outside.write_text(json.dumps([{"image_id": 0, "category_id": 1, "score": 0.9,
                                    "bbox": [500, 500, 20, 40]}]))
    cases = [
        ((f"--image={junk}",), "cannot read image", str(junk)),
        ((f"--image={files['image']}", f"--det_file={empty}"), "no person boxes", str(empty)),
        ((f"--image={files['image']}", f"--det_file={outside}"), "outside", files["image"]),
        ((f"--video={junk}",), ("cannot open video", "no readable frame"), str(junk)),
    ]
    for args, message, name in cases:
        out_path = d / "bad_out.png" if "--image" in args[0] else d / "bad_out.avi"
        rc, _, err, _ = _run(f"--model={files['pose']}", *args, f"--out={out_path}")
        messages = message if isinstance(message, tuple) else (message,)
        assert rc == 2 and any(m in err for m in messages) and name in err, err
        assert not out_path.exists()  # nothing half-written
    rc, _, err, _ = _run(f"--model={files['other']}", f"--image={files['image']}",
                         f"--out={d}/x.png")
    assert rc == 2 and "is not a pose model" in err and files["other"] in err
    # A truncated video: processed up to where it ends, reported, outputs complete.
    rc, out, err, _ = _run(f"--model={files['pose']}", f"--video={files['truncated']}",
                           f"--out={d}/trunc_out.avi")
    assert rc == 3 and "ended early" in err and files["truncated"] in err
    n = len(json.load(open(d / "trunc_out.json")))
    assert 0 < n < 12 and f"read {n} of 12 frames" in err


COCO_IMAGE_ID = 196141  # an image of the real COCO sample with 33 detections


def _coco_boxes(det_file, image_id, threshold):
    """[(x, y, w, h)] of the person detections of one image scoring >= threshold, in file
    order, read straight from the JSON."""
    return [r["bbox"] for r in json.load(open(det_file))
            if r["image_id"] == image_id and r["category_id"] == 1 and r["score"] >= threshold]


@pytest.mark.slow
def test_predict_real_coco_image_uses_only_its_own_boxes(files, coco_sample, tmp_path):
    image = os.path.join(coco_sample["image_dir"], f"{COCO_IMAGE_ID:012d}.jpg")
    det, threshold = coco_sample["det_file"], 0.3
    boxes = _coco_boxes(det, COCO_IMAGE_ID, threshold)
    assert 0 < len(boxes) < len(_coco_boxes(det, COCO_IMAGE_ID, 0.0))  # the threshold matters
    for how in (f"--ann_file={coco_sample['ann_file']}", f"--image_id={COCO_IMAGE_ID}"):
        rc, out, err, tf_loaded = _run(f"--model={files['pose']}", f"--image={image}",
                                       f"--det_file={det}", f"--det_score_threshold={threshold}",
                                       how, f"--out={tmp_path}/out.png")
        assert rc == 0 and not tf_loaded, err
        results = json.load(open(tmp_path / "out.json"))
        assert len(results) == len(boxes), how
        assert {r["image_id"] for r in results} == {COCO_IMAGE_ID}
        # Result i comes from box i: its keypoints lie in that box's square crop (the 64x64
        # model: side max(w, h) x 1.25, plus one heatmap pixel of slack).
        for r, (x, y, w, h) in zip(results, boxes, strict=True):
            xy = np.asarray(r["keypoints"]).reshape(17, 3)[:, :2]
            half = max(w, h) * 1.25 / 2 * (1 + 2 / 16)
            assert np.all(np.abs(xy - (x + w / 2, y + h / 2)) <= half), how


@pytest.mark.slow
def test_predict_image_boxes_need_an_image_id(files, coco_sample, tmp_path):
    det = coco_sample["det_file"]
    image = os.path.join(coco_sample["image_dir"], f"{COCO_IMAGE_ID:012d}.jpg")
    out = tmp_path / "out.png"
    # Four images' detections and no id: an error, even though the file name holds the id.
    rc, _, err, _ = _run(f"--model={files['pose']}", f"--image={image}", f"--det_file={det}",
                         f"--out={out}")
    ids = sorted({r["image_id"] for r in json.load(open(det))})
    assert rc == 2 and det in err and ", ".join(map(str, ids)) in err, err
    assert not out.exists()
    # The id is looked up by file name in the annotation file, never parsed from it.
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes(open(image, "rb").read())
    rc, _, err, _ = _run(f"--model={files['pose']}", f"--image={renamed}", f"--det_file={det}",
                         f"--ann_file={coco_sample['ann_file']}", f"--out={out}")
    assert rc == 2 and "no 'images' entry has file_name 'photo.jpg'" in err, err
    assert coco_sample["ann_file"] in err
    # An id without detections in the file.
    rc, _, err, _ = _run(f"--model={files['pose']}", f"--image={renamed}", f"--det_file={det}",
                         "--image_id=12345", f"--out={out}")
    assert rc == 2 and "no person detection of image 12345" in err and det in err, err
    # A single-image detection file needs no id, and its id is written.
    single = tmp_path / "single.json"
    single.write_text(json.dumps([r for r in json.load(open(det))
                                  if r["image_id"] == COCO_IMAGE_ID]))
    rc, _, err, _ = _run(f"--model={files['pose']}", f"--image={renamed}", f"--det_file={single}",
                         "--det_score_threshold=0.5", f"--out={out}")
    assert rc == 0, err
    results = json.load(open(tmp_path / "out.json"))
    assert len(results) == len(_coco_boxes(det, COCO_IMAGE_ID, 0.5))
    assert {r["image_id"] for r in results} == {COCO_IMAGE_ID}


def test_load_predictor_takes_a_run_or_a_model_file(tmp_path):
    from fptflite.serving.predictors import load_predictor

    with pytest.raises(ValueError, match=f"{tmp_path} is not a run directory: config.json"):
        load_predictor(str(tmp_path))
    other = tmp_path / "model.pb"
    other.write_bytes(b"x")
    with pytest.raises(ValueError, match="model.pb: expected a run directory or a model file"):
        load_predictor(str(other))
