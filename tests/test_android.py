"""The Android drop-in: in-graph decode vs the Python codec, the exported file's contract and
ops, and the file run through a replica of the app's pipeline on rendered frames."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tf_keras as keras

from fptflite.codec import decode_heatmaps, encode_keypoints, heatmap_to_crop
from fptflite.keypoints import COCO_KEYPOINT_NAMES
from fptflite.serving import android, app_pipeline, dropin_build, dropin_check
from fptflite.serving.decode_layer import HeatmapPeakDecode
from fptflite.tflite import litert

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZE = 64
FRAME = (160, 160)
NUM_FRAMES = 8


def _quantized_heatmaps(rng, n, size=32, k=17):
    """Sigmoid-like heatmaps (uint8 steps of 1/256, peak <= 0.96) at sub-pixel positions."""
    out, stride = [], 4
    for _ in range(n):
        kps = np.concatenate([rng.uniform(4, size * stride - 4, (k, 2)), np.ones((k, 1))], 1)
        t, _ = encode_keypoints(kps, (size, size), stride, 2.0)
        t = t * rng.uniform(0.3, 0.96, k) + rng.uniform(0, 0.03, (size, size, k))
        out.append(np.floor(np.clip(t, 0, 1) * 256).clip(0, 255) / 256)
    return np.stack(out).astype(np.float32)


def test_decode_layer_matches_python_dark(rng):
    hm = _quantized_heatmaps(rng, 24)
    ref, ref_scores = decode_heatmaps(hm, "dark")
    out = HeatmapPeakDecode()(hm).numpy()
    assert out.shape == (24, 1, 17, 3)
    u, v = out[:, 0, :, 1] * 32 - 0.5, out[:, 0, :, 0] * 32 - 0.5
    d = np.hypot(u - ref[..., 0], v - ref[..., 1])
    print(f"in-graph vs Python DARK: mean {d.mean():.2e} max {d.max():.2e} heatmap px")
    assert d.max() <= 1e-4  # measured 6e-6 (float32 rounding)
    np.testing.assert_array_equal(out[:, 0, :, 2], ref_scores)
    # Against the truth the refinement beats the integer peak (it does something).
    argmax, _ = decode_heatmaps(hm, "argmax")
    assert np.abs(ref - argmax).max() > 0.2


def _tied_heatmaps(rng, n, size=32, k=17):
    """uint8-grid heatmaps whose maximum occurs at 2-4 pixels, as int8 bodies produce: a
    plateau next to the Gaussian's peak, copies of the peak value in the same row or
    elsewhere (border rows and columns included), and all-zero maps."""
    hm = _quantized_heatmaps(rng, n, size, k)
    for i in range(n):
        for j in range(k):
            m = hm[i, :, :, j]
            y, x = np.unravel_index(np.argmax(m), m.shape)
            mode = (i * k + j) % 4
            if mode == 0:  # a plateau: a neighbour equals the peak
                dy, dx = ((0, 1), (1, 0), (1, 1), (0, -1), (-1, 0))[rng.integers(5)]
                m[np.clip(y + dy, 0, size - 1), np.clip(x + dx, 0, size - 1)] = m[y, x]
            elif mode == 1:  # the same value further along the row (np.argmax: the first)
                m[y, rng.integers(size)] = m[y, x]
            elif mode == 2:  # 1-3 copies anywhere, including the border
                for yy, xx in rng.integers(0, size, (rng.integers(1, 4), 2)):
                    m[yy, xx] = m[y, x]
                m[rng.choice([0, size - 1]), rng.integers(size)] = m[y, x]
            else:  # an earlier separate peak of the same value
                m[rng.integers(0, max(y, 1)), rng.integers(size)] = m[y, x]
    hm[0, :, :, :2] = 0.0  # all pixels tie
    return hm


def _decode_tflite(hm):
    """The decode converted alone to a float .tflite (what follows the drop-in's heatmap
    DEQUANTIZE) and run on the LiteRT interpreter with XNNPACK."""
    import tensorflow as tf

    inp = keras.Input(hm.shape[1:], batch_size=1)
    model = keras.Model(inp, HeatmapPeakDecode()(inp))
    interp = litert.load_interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert(), num_threads=1)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs = []
    for x in hm:
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"])[0])
    return np.stack(outputs)


def test_decode_picks_the_first_of_tied_peaks_as_numpy(rng):
    """Equal int8 maxima: the in-graph decode (Keras and the converted file) takes
    np.argmax's pixel (the first in raster order), so it equals the Python DARK decode."""
    hm = _tied_heatmaps(rng, 16)
    n, h, w, k = hm.shape
    ties = (hm == hm.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2))
    assert (ties >= 2).mean() > 0.9  # the case under test: several pixels hold the maximum
    ref, ref_scores = decode_heatmaps(hm, "dark")
    # The mean position of the tied pixels (what a soft-argmax returns) is far from numpy's.
    _, xx = np.mgrid[:h, :w]
    top = hm == hm.max(axis=(1, 2), keepdims=True)
    mean_x = (top * xx[None, :, :, None]).sum(axis=(1, 2)) / top.sum(axis=(1, 2))
    argmax, _ = decode_heatmaps(hm, "argmax")
    assert np.abs(mean_x - argmax[..., 0]).max() > 5
    for name, out in (("keras", HeatmapPeakDecode()(hm).numpy()), ("tflite", _decode_tflite(hm))):
        u, v = out[:, 0, :, 1] * w - 0.5, out[:, 0, :, 0] * h - 0.5
        d = np.hypot(u - ref[..., 0], v - ref[..., 1])
        print(f"{name}: in-graph vs Python DARK on tied heatmaps: max {d.max():.2e} px")
        assert d.max() <= 1e-4  # measured 1e-5 (float32 rounding)
        np.testing.assert_array_equal(out[:, 0, :, 2], ref_scores)


def test_decode_layer_serializes(tmp_path):
    inp = keras.Input((16, 16, 17))
    model = keras.Model(inp, HeatmapPeakDecode(dark_kernel=7, name="dec")(inp))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("dec").dark_kernel == 7
    x = _quantized_heatmaps(np.random.default_rng(0), 2, size=16)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        HeatmapPeakDecode(dark_kernel=4)


def test_dropin_needs_a_square_input():
    from fptflite.models import build_model

    with pytest.raises(ValueError, match="square"):
        dropin_build.build_dropin_model(build_model("fasterpose_mnv2_035", (64, 32)))


def test_contract_refuses_a_dynamic_batch():
    """[-1, S, S, 3] in the signature breaks LiteRT.js and GPU accelerators: a problem."""
    def details(shape, sig, dtype):
        return [{"shape": np.array(shape), "shape_signature": np.array(sig), "dtype": dtype}]

    ok_out = details([1, 1, 17, 3], [1, 1, 17, 3], np.float32)
    assert dropin_check._interface_problems(
        details([1, 64, 64, 3], [1, 64, 64, 3], np.uint8), ok_out) == []
    problems = dropin_check._interface_problems(
        details([1, 64, 64, 3], [-1, 64, 64, 3], np.uint8), ok_out)
    assert len(problems) == 1 and "static" in problems[0] and "[-1, 64, 64, 3]" in problems[0]


def _frames_dataset(root):
    """Single-figure frames as a COCO-layout dataset (val = train), with the frames."""
    from fptflite.data import synthetic_video
    from fptflite.keypoints import PERSON_CATEGORY

    images, anns, frames = [], [], []
    for split in ("train2017", "val2017"):
        os.makedirs(os.path.join(root, split), exist_ok=True)
    for i in range(NUM_FRAMES):
        img, kps = synthetic_video.frames(1, FRAME, seed=i, moving=False)
        img, kps = img[0], kps[0]
        lo, hi = kps.min(0) - 10, kps.max(0) + 10
        box = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
        name = f"{i:04d}.png"
        for split in ("train2017", "val2017"):
            cv2.imwrite(os.path.join(root, split, name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": name, "height": FRAME[0], "width": FRAME[1]})
        k = np.concatenate([kps, np.full((17, 1), 2.0)], 1).reshape(-1).tolist()
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": box,
                     "area": box[2] * box[3], "iscrowd": 0, "keypoints": k,
                     "num_keypoints": 17})
        frames.append((img, box))
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    for split, reps in (("train2017", 6), ("val2017", 1)):
        rep = [dict(a, id=a["id"] + 1000 * r) for r in range(reps) for a in anns]
        with open(os.path.join(root, "annotations", f"person_keypoints_{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": rep,
                       "categories": [dict(PERSON_CATEGORY)]}, f)
    return frames


@pytest.fixture(scope="module")
def dropin(tmp_path_factory):
    """A tiny model fitted to rendered single-figure frames, exported as the drop-in (PTQ)."""
    from fptflite import rundir
    from fptflite.data import datasets
    from fptflite.quantization.model_io import load_model
    from fptflite.tasks import configs, trainer

    root = str(tmp_path_factory.mktemp("android"))
    data = os.path.join(root, "data")
    frames = _frames_dataset(data)
    cfg = configs.apply_overrides(configs.get_config("demo"), [
        "data.layout=coco", f"data.data_dir={data}", "model=fasterpose_mnv2_035",
        f"input_size=[{SIZE},{SIZE}]", "neck_channels=32", "epochs=30",
        "batch_size_per_replica=8", "learning_rate=0.005", "warmup_epochs=0",
        "eval_flip_test=false", "augment.scale_factor=0.0", "augment.rotation_prob=0.0",
        "augment.flip=false", "augment.half_body_prob=0.0"])
    model_dir = os.path.join(root, "float")
    trainer.train(cfg, model_dir)
    source = rundir.best_export(model_dir)
    body = load_model(source)
    calib = datasets.split_calibration_crops(cfg.data, (SIZE, SIZE), "train", 16)
    assets = os.path.join(root, "assets")
    card = android.export_android(body, "ptq", assets, calib, source, os.path.join(root, "w"),
                                  threads=(2,))
    return {"assets": assets, "card": card, "frames": frames, "body": body, "calib": calib,
            "root": root, "run": model_dir}


@pytest.mark.slow
def test_dropin_file_contract_and_ops(dropin):
    path = os.path.join(dropin["assets"], android.DROPIN_FILENAME)
    report = dropin_check.audit_dropin(path)
    assert report["passed"], report["problems"]
    # The app's raw uint8 pixels are the int8 body's input as they are: scale 1, zero point 0.
    assert report["input"] == {"shape": [1, SIZE, SIZE, 3], "dtype": "uint8",
                               "quantization": [1.0, 0.0]}
    assert report["output"] == {"shape": [1, 1, 17, 3], "dtype": "float32"}
    assert not set(report["ops"]) & dropin_check.FORBIDDEN_OPS
    assert report["ops"]["DEQUANTIZE"] == 1  # one float boundary: int8 body, float decode
    assert report["shape_signatures"] == {"input": [1, SIZE, SIZE, 3],  # static: LiteRT.js
                                          "output": [1, 1, 17, 3]}
    assert "looks compatible with GPU delegate" in report["gpu_compatibility"]
    card = json.load(open(os.path.join(dropin["assets"], "model_card.json")))
    assert card["input_size"] == [SIZE, SIZE] and card["int8"] == "ptq"
    assert card["keypoint_names"] == list(COCO_KEYPOINT_NAMES) and card["ops"] == report["ops"]
    assert card["int8_body_audit"]["passed"]
    for key in ("skeleton", "flip_pairs", "score_threshold", "source_model", "output_layout",
                "latency_ms_xnnpack_cpu", "decode_parity_heatmap_px"):
        assert key in card
    names = open(os.path.join(dropin["assets"], "keypoints.txt")).read().split()
    assert names == list(COCO_KEYPOINT_NAMES)


@pytest.mark.slow
def test_app_pipeline_matches_python_decode(dropin):
    """The file in a replica of MoveNet.kt's pipeline vs decode_heatmaps(dark) of the same
    file's heatmaps, mapped to the same frame."""
    path = os.path.join(dropin["assets"], android.DROPIN_FILENAME)
    interp = litert.load_interpreter(path, delegates=False, preserve_all_tensors=True)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hm_index = dropin_check.heatmap_tensor_index(interp, litert.list_ops(path))
    diffs, float_diffs, person_scores = [], [], []
    for frame, (x, y, w, h) in dropin["frames"]:
        side = 1.25 * max(w, h)
        region = app_pipeline.SquareRegion(x + w / 2 - side / 2, y + h / 2 - side / 2, side)
        image, snapped = app_pipeline.app_input(frame, region, SIZE)
        interp.set_tensor(inp["index"], image[None])
        interp.invoke()
        xy_app, _, person = app_pipeline.parse_output(interp.get_tensor(out["index"]), snapped)
        xy_app = xy_app - 0.5  # the app's edge-based pixels -> pixel centres
        px_per_hm = snapped.size / SIZE * 4
        refs = []
        for hm in (dropin_check.read_heatmaps(interp, hm_index),
                   dropin["body"](image[None].astype(np.float32)).numpy()):
            coords, _ = decode_heatmaps(hm, "dark")
            crop_xy = heatmap_to_crop(coords[0], 4)
            refs.append((crop_xy + 0.5) * snapped.size / SIZE - 0.5
                        + [snapped.left, snapped.top])
        diffs.append(np.hypot(*(xy_app - refs[0]).T) / px_per_hm)
        float_diffs.append(np.hypot(*(xy_app - refs[1]).T) / px_per_hm)
        person_scores.append(person)
    d, fd = np.concatenate(diffs), np.concatenate(float_diffs)
    print(f"in-graph vs Python DARK (same int8 heatmaps): mean {d.mean():.4f} max {d.max():.4f}"
          f" heatmap px; vs the float model's heatmaps: mean {fd.mean():.3f}; person scores "
          f"{np.round(person_scores, 2)}")
    assert d.mean() <= 0.25 and d.max() <= 1.0  # the bounds
    assert d.max() <= 1e-3  # measured < 1e-4: the same pixel as np.argmax, DARK to float noise
    assert min(person_scores) > 0.5


@pytest.mark.slow
def test_export_refuses_a_failing_file_and_leaves_no_assets(dropin, tmp_path):
    out = str(tmp_path / "assets")
    with pytest.raises(ValueError, match="TFLite"):
        android.write_assets(out, b"TFL3 not a model", "ptq", "x.keras")
    assert not os.path.exists(os.path.join(out, android.DROPIN_FILENAME))


@pytest.mark.slow
def test_qat_dropin_keeps_contract_and_decode(dropin):
    """The QAT path (what make demo ships when QAT wins): the converter keeps the heatmap
    TRANSPOSE and row maxima in int8; the audit passes and the in-graph decode equals the
    Python decode of the file's own int8 heatmaps."""
    from fptflite import quantization

    qat = quantization.quantize(dropin["body"], dropin["calib"])
    path = os.path.join(dropin["root"], "qat_" + android.DROPIN_FILENAME)
    with open(path, "wb") as f:
        f.write(dropin_build.convert_dropin(qat, "qat", dropin["calib"]))
    report = dropin_check.audit_dropin(path)
    assert report["passed"], report["problems"]
    assert "TRANSPOSE" in report["ops"]
    parity = dropin_check.decode_parity(path, dropin["calib"])
    print(f"QAT drop-in: in-graph vs Python DARK {parity}")
    # measured: mean 2.0e-6, max 8.2e-6 px (DARK in float32 vs float64); the same pixel
    # always. Scores: exact on a sigmoid body's 1/256 grid; the demo's linear (MSE) body
    # dequantizes off that grid and the decode's float pass rounds the last bit (1.2e-7).
    assert parity["mean_px"] < 1e-5 and parity["max_px"] < 1e-4
    assert parity["max_score_diff"] <= 2.4e-7


@pytest.mark.slow
def test_export_without_the_old_runtime_installed_downloads_nothing(dropin, tmp_path):
    """No TensorFlow Lite 2.14 environment and no package index: the export succeeds and its
    card says the 2.14 check was not run and why; asked for explicitly, it exits 2 with that
    reason and writes nothing. Nothing is installed at run time."""
    empty = tmp_path / "runtimes"
    empty.mkdir()
    env = {**os.environ, "FPTFLITE_RUNTIMES_DIR": str(empty), "PIP_CONFIG_FILE": os.devnull,
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}
    missing = f"TensorFlow Lite 2.14 environment missing ({empty / 'tflite2.14'}): make runtimes"
    cmd = [sys.executable, "-m", "conversion.export_android", f"--model={dropin['run']}",
           "--int8=ptq"]
    done = subprocess.run([*cmd, f"--out_dir={tmp_path / 'assets'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.load(open(tmp_path / "assets" / "model_card.json"))
    assert card["runs_on"]["tflite_2.14"] == {"runtime": "tflite2.14", "ran": False,
                                              "reason": missing}
    assert card["keypoints_vs_cpu_heatmap_px"]["tflite2.14"] == {"ran": False,
                                                                "reason": missing}
    assert os.listdir(empty) == []
    asked = subprocess.run([*cmd, f"--out_dir={tmp_path / 'asked'}", "--min_runtime=2.14"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert asked.returncode == 2, asked.stderr[-3000:]
    assert asked.stderr.strip().splitlines()[-1] == \
        f"error: --min_runtime=2.14 was asked for: {missing}"
    assert not (tmp_path / "asked").exists() and os.listdir(empty) == []
