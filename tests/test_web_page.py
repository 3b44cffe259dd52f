"""The pose page (web/pose) in headless Chromium: its keypoints against the Python predictor
on the same drop-in and the same crops, on the real COCO sample images and a synthetic video;
its crops and tracking against the Python replica of the app (app_pipeline, tracking); and
what the page and serve_web say about bad input."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from conftest import REPO
from helpers.runtimes import require_all

from fptflite.data import synthetic_video
from fptflite.models import build_model
from fptflite.serving import app_pipeline, dropin_build, tracking, web_server
from fptflite.serving.predictors import DropInPredictor
from fptflite.tflite import convert, runtimes, web_runtime

SIZE = 64
VIDEO_FRAMES = 12


def _web_or_skip():
    lack = web_runtime.missing()
    if lack:
        if require_all():
            pytest.fail(f"the web runtime must run in CI: missing {lack}: make web")
        pytest.skip(f"the pose page cannot run here: missing {', '.join(lack)}: make web")


@pytest.fixture(scope="module")
def dropin(tmp_path_factory):
    """A random-weight FasterPose drop-in (PTQ, 64x64) whose heatmaps follow the image: the
    head's prior bias is zeroed and its kernel scaled so that logits vary (std ~3)."""
    _web_or_skip()
    tf.keras.utils.set_random_seed(0)
    body = build_model("fasterpose_mnv2_035", (SIZE, SIZE))
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, SIZE, SIZE, 3)).astype(np.float32)
    head = body.get_layer("head_conv")
    features = keras.Model(body.inputs, head.input)(calib).numpy()
    kernel, bias = head.get_weights()
    logits = features.reshape(-1, kernel.shape[2]) @ kernel.reshape(kernel.shape[2], -1)
    head.set_weights([kernel * 3.0 / logits.std(), np.zeros_like(bias)])
    path = str(tmp_path_factory.mktemp("page") / "dropin.tflite")
    with open(path, "wb") as f:
        f.write(dropin_build.convert_dropin(body, "ptq", calib))
    return path


@pytest.fixture(scope="module")
def page(dropin):
    server, url = web_server.serve_in_thread(web_server.check_dropin(dropin))
    yield url
    server.shutdown()
    server.server_close()


def _crop(person):
    return np.frombuffer(base64.b64decode(person["input"]), np.uint8).reshape(SIZE, SIZE, 3)


def _region(r):
    return app_pipeline.SquareRegion(r["left"], r["top"], r["size"])


def _check_person(person, frame_rgb, cpu):
    """The page's output equals LiteRT's on the page's own crop; returns the page's crop vs
    the Python replica's crop (levels) and keypoints (frame px) for the same region."""
    crop = _crop(person)
    out = cpu.run(crop[None])
    # LiteRT.js on wasm runs XNNPACK's kernels: measured identical (0.0) to LiteRT's CPU.
    np.testing.assert_allclose(np.array(person["output"]).reshape(1, 1, 17, 3), out, atol=1e-6)
    xy, scores, score = app_pipeline.parse_output(out, _region(person["region"]))
    np.testing.assert_allclose(person["keypoints"], xy, atol=1e-3)  # float32 vs float64
    np.testing.assert_allclose(person["scores"], scores, atol=1e-6)
    # The Python predictor (pixel centres) on the same crop: the same keypoints less 0.5 px.
    pred_xy, _ = DropInPredictor("page", cpu)(crop)
    np.testing.assert_allclose(pred_xy * person["region"]["size"] / SIZE,
                               xy - np.array([person["region"]["left"],
                                              person["region"]["top"]])
                               - 0.5 * person["region"]["size"] / SIZE, atol=1e-3)
    py_crop, _ = app_pipeline.app_input(frame_rgb, _region(person["region"]), SIZE)
    py_xy, _, _ = app_pipeline.parse_output(cpu.run(py_crop[None]), _region(person["region"]))
    crop_diff = np.abs(crop.astype(int) - py_crop)
    return crop_diff, np.abs(np.array(person["keypoints"]) - py_xy)


def test_page_matches_python_on_coco_images(page, dropin, coco_sample, tmp_path):
    """Whole-frame crops of the 4 real images, and the annotated people's boxes of one."""
    cpu = runtimes.open_session("cpu", dropin)
    names = sorted(os.listdir(coco_sample["image_dir"]))
    anns = json.load(open(coco_sample["ann_file"]))
    people_boxes = {int(os.path.splitext(n)[0]): [
        a["bbox"] for a in anns["annotations"] if a["image_id"] == int(os.path.splitext(n)[0])
        and a["num_keypoints"] > 0] for n in names}
    crowded = max(people_boxes, key=lambda i: len(people_boxes[i]))
    crop_diffs, kp_diffs = [], []
    for name in names:
        path = os.path.join(coco_sample["image_dir"], name)
        image_id = int(os.path.splitext(name)[0])
        boxes = people_boxes[image_id] if image_id == crowded else None
        got = web_server.drive_page(page + "/", upload=path,
                                    boxes=json.dumps(boxes) if boxes else None,
                                    screenshot=str(tmp_path / f"{name}.png"))["result"]
        assert got["error"] is None and got["done"], got["error"]
        frame = got["frames"][0]
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        assert (frame["height"], frame["width"]) == rgb.shape[:2]
        people = frame["people"]
        if boxes:
            assert len(people) == len(boxes) > 1
            for person, box in zip(people, boxes, strict=True):  # the page's box rule
                side = max(box[2], box[3]) * 1.25
                assert person["region"] == pytest.approx({
                    "left": round(box[0] + box[2] / 2 - side / 2),
                    "top": round(box[1] + box[3] / 2 - side / 2), "size": int(side)}, abs=1)
        else:
            whole = app_pipeline.whole_frame_region(rgb.shape[1], rgb.shape[0])
            assert _region(people[0]["region"]) == app_pipeline.SquareRegion(
                round(whole.left), round(whole.top), int(whole.size))
        for person in people:
            crop_diff, kp_diff = _check_person(person, rgb, cpu)
            crop_diffs.append(crop_diff)
            kp_diffs.append(kp_diff)
        assert os.path.getsize(tmp_path / f"{name}.png") > 10_000
    crop_diffs, kp_diffs = np.concatenate(crop_diffs), np.concatenate(kp_diffs)
    print(f"page vs app_pipeline crops: mean {crop_diffs.mean():.4f}, max {crop_diffs.max()} "
          f"levels; keypoints: mean {kp_diffs.mean():.4f}, max {kp_diffs.max():.4f} px")
    # The page resizes in OpenCV's fixed-point arithmetic: the crops are equal but for a few
    # values of a crop's first and last rows, by one level (measured: mean 1e-4 levels).
    assert crop_diffs.max() <= 1 and crop_diffs.mean() < 1e-3
    assert np.median(kp_diffs) == 0.0 and kp_diffs.max() < 1.0


def test_page_tracks_a_synthetic_video_like_the_app(page, dropin, tmp_path):
    frames, _ = synthetic_video.frames(VIDEO_FRAMES, (240, 320), seed=2)
    video = str(tmp_path / "walk.webm")
    synthetic_video.write_video(video, frames)
    got = web_server.drive_page(page + "/", upload=video,
                                screenshot=str(tmp_path / "video.png"))["result"]
    assert got["error"] is None, got["error"]
    assert [f["index"] for f in got["frames"]] == list(range(VIDEO_FRAMES))
    cpu = runtimes.open_session("cpu", dropin)
    decoded = cv2.VideoCapture(video)
    first = got["frames"][0]["people"][0]["region"]
    assert _region(first) == app_pipeline.SquareRegion(0.0, -40.0, 320.0)  # whole frame
    crop_diffs = []
    for frame in got["frames"]:
        ok, bgr = decoded.read()
        assert ok
        person = frame["people"][0]
        crop_diff, _ = _check_person(person, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cpu)
        crop_diffs.append(crop_diff)
        # The page's tracking (pipeline.mjs) is tracking.movenet_crop_region.
        want = tracking.movenet_crop_region(np.array(person["keypoints"]),
                                            np.array(person["scores"]), 320, 240)
        np.testing.assert_allclose([frame["nextRegion"][k] for k in ("left", "top", "size")],
                                   [want.left, want.top, want.size], atol=1e-6)
    # Chromium and OpenCV decode VP8 to RGB with different YUV conversions (measured: mean
    # 0.85 levels).
    crop_diffs = np.concatenate(crop_diffs)
    print(f"video crops, page vs OpenCV decode: mean {crop_diffs.mean():.3f} levels")
    assert crop_diffs.mean() < 1.5


def test_page_and_server_say_what_is_wrong(page, dropin, tmp_path):
    bad_image = tmp_path / "broken.jpg"
    bad_image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    got = web_server.drive_page(page + "/", upload=str(bad_image))["result"]
    assert got["error"].startswith("the browser cannot decode broken.jpg")
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"\x1aE\xdf\xa3" + b"\0" * 64)
    got = web_server.drive_page(page + "/", upload=str(empty))["result"]
    assert "cannot play empty.webm" in got["error"] or "no video frames" in got["error"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(page + "/%2e%2e/%2e%2e/setup.py")
    assert e.value.code == 403
    assert urllib.request.urlopen(page + "/").geturl().endswith("/pose/index.html")
    headers = urllib.request.urlopen(page + "/pose/index.html").headers
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"

    heatmaps = str(tmp_path / "heatmaps.tflite")
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(17, 4, 4),
                              keras.layers.Activation("sigmoid")])
    with open(heatmaps, "wb") as f:
        f.write(convert.convert(model, "int8_ptq", np.full((2, SIZE, SIZE, 3), 99.0, np.float32),
                                batch_size=1))
    with pytest.raises(web_server.ModelError, match="not a pose drop-in's keypoints"):
        web_server.check_dropin(heatmaps)
    with pytest.raises(web_server.ModelError, match="not a model LiteRT can load"):
        web_server.check_dropin(str(bad_image))
    with pytest.raises(web_server.ModelError, match="no drop-in found"):
        web_server.find_dropin(str(tmp_path))
    # The page's own check, served a heatmap file regardless.
    served = web_server.ServedModel(heatmaps, open(heatmaps, "rb").read(), SIZE, False)
    server, url = web_server.serve_in_thread(served)
    try:
        got = web_server.drive_page(url + "/")["result"]
    finally:
        server.shutdown()
        server.server_close()
    assert not got["ready"] and "not a pose model's keypoints" in got["error"]
    assert "[1, 16, 16, 17]" in got["error"]


def test_serve_web_finds_the_run_dropin_and_refuses_bad_models(dropin, tmp_path):
    run = tmp_path / "run"
    (run / "android").mkdir(parents=True)
    os.link(dropin, run / "android" / web_server.DROPIN_FILENAME)
    assert web_server.find_dropin(str(run)) == (
        str(run / "android" / web_server.DROPIN_FILENAME), "the run's android/ folder")
    proc = subprocess.Popen([sys.executable, "-m", "fptflite.serve_web", f"--model={run}",
                             "--port=0"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert "the run's android/ folder" in first and "64x64 input" in first
        assert second.startswith("serving the pose page at http://127.0.0.1:")
        url = second.split(" at ")[1].split()[0]
        assert b"FasterPose in the browser" in urllib.request.urlopen(url).read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (tmp_path / "junk.tflite").write_bytes(b"junk")
    done = subprocess.run([sys.executable, "-m", "fptflite.serve_web",
                           f"--model={tmp_path / 'junk.tflite'}", "--port=0"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a model LiteRT can load" in done.stderr
