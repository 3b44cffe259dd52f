"""Video prediction figures: end-to-end frames/s, jitter with/without One-Euro, and its lag.

    flock /tmp/team/cpu.lock python -m benchmarks.predict_video \
        --model=android_demo_assets/fasterpose_singlepose.tflite --out_dir=/tmp/bench_predict

1. ``--track --smooth`` on a 300-frame 640x480 video of a moving rendered figure: frames/s
   end to end (decode, crop, inference, drawing, encode), as ``fptflite.predict`` reports.
2. Jitter: a static rendered figure with noisy detector boxes (centre and size jittered by
   ``box_noise`` of the box size per frame): mean frame-to-frame keypoint motion (px) of
   confident keypoints without and with smoothing (the figure does not move: all motion is
   jitter).
3. Lag: the moving figure tracked with and without smoothing; the lag is the time shift
   (frames) that best aligns the smoothed keypoint tracks with the unsmoothed ones.
"""

import json
import os
import sys

import numpy as np
from absl import app, flags

from fptflite.data import synthetic_video
from fptflite.serving.predictors import load_predictor
from fptflite.serving.video import PredictOptions, predict_video
from fptflite.utils import cli
from fptflite.utils.io import write_json_atomic

_MODEL = cli.flag("model")
_OUT = cli.flag("out_dir")
_FRAMES = flags.DEFINE_integer("num_frames", 300, "Frames per video.")
_BOX_NOISE = flags.DEFINE_float("box_noise", 0.03, "Box jitter (fraction of the box size).")
_THREADS = cli.flag("num_threads", default=2)
flags.mark_flags_as_required(["model", "out_dir"])


def _tracks(json_path: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, 17, 2] keypoints and [T, 17] scores of the first person of each frame."""
    results = json.load(open(json_path))
    xy, s = np.full((num_frames, 17, 2), np.nan), np.zeros((num_frames, 17))
    for r in results:
        k = np.asarray(r["keypoints"]).reshape(17, 3)
        if np.isnan(xy[r["frame_index"], 0, 0]):
            xy[r["frame_index"]], s[r["frame_index"]] = k[:, :2], k[:, 2]
    return xy, s


def jitter_px(xy: np.ndarray, scores: np.ndarray, threshold: float = 0.2) -> float:
    """Mean frame-to-frame motion (px) of keypoints confident in both frames."""
    ok = (scores[1:] > threshold) & (scores[:-1] > threshold)
    step = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
    return float(step[ok].mean())


def lag_frames(raw: np.ndarray, smooth: np.ndarray, max_lag: float = 5.0) -> float:
    """The shift s (frames, step 0.05) minimising |smooth(t) - raw(t - s)| over the tracks."""
    t = np.arange(len(raw), dtype=np.float64)
    best, best_err = 0.0, np.inf
    for s in np.arange(0.0, max_lag, 0.05):
        shifted = np.stack([[np.interp(t - s, t, raw[:, k, c]) for c in range(2)]
                            for k in range(raw.shape[1])]).transpose(2, 0, 1)
        err = np.abs(smooth[20:] - shifted[20:]).mean()
        if err < best_err:
            best, best_err = s, err
    return float(best)


def _noisy_boxes(kps: np.ndarray, noise: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    boxes = []
    for i, k in enumerate(kps):
        lo, hi = k.min(0) - 15, k.max(0) + 15
        c, size = (lo + hi) / 2, hi - lo
        c = c + rng.normal(0, noise, 2) * size
        size = size * (1 + rng.normal(0, noise, 2))
        boxes.append({"image_id": i, "category_id": 1, "score": 1.0,
                      "bbox": [float(v) for v in (*(c - size / 2), *size)]})
    return boxes


def main(argv):
    del argv
    out, n = _OUT.value, _FRAMES.value
    os.makedirs(out, exist_ok=True)
    moving, moving_gt = synthetic_video.frames(n, (480, 640), seed=0, moving=True)
    static, static_gt = synthetic_video.frames(n, (480, 640), seed=0, moving=False)
    synthetic_video.write_video(os.path.join(out, "moving.mp4"), moving)
    synthetic_video.write_video(os.path.join(out, "static.mp4"), static)
    write_json_atomic(os.path.join(out, "static_boxes.json"),
                      _noisy_boxes(static_gt, _BOX_NOISE.value, 1))
    predictor = load_predictor(_MODEL.value, _THREADS.value)
    rows = {}
    for name, video, kw, boxes in (
            ("moving, --track --smooth", "moving", {"track": True, "smooth": True}, None),
            ("moving, --track", "moving", {"track": True}, None),
            ("static, noisy boxes", "static", {}, "static_boxes.json"),
            ("static, noisy boxes, --smooth", "static", {"smooth": True}, "static_boxes.json")):
        stem = os.path.join(out, name.replace(", ", "_").replace(" ", "_").replace("--", ""))
        stats = predict_video(predictor, os.path.join(out, f"{video}.mp4"), stem + ".mp4",
                              stem + ".json", os.path.join(out, boxes) if boxes else None,
                              PredictOptions(progress=False, **kw))
        xy, scores = _tracks(stem + ".json", n)
        gt = moving_gt if video == "moving" else static_gt
        err = np.linalg.norm(xy - gt, axis=-1)[scores > 0.2].mean()
        rows[name] = {"fps": stats["frames"] / stats["seconds"],
                      "jitter_px": jitter_px(xy, scores), "error_px": float(err),
                      "xy": xy}
    lag = lag_frames(rows["moving, --track"]["xy"], rows["moving, --track --smooth"]["xy"])
    print(f"model {_MODEL.value}, {n} frames of 640x480, {_THREADS.value} LiteRT threads")
    print("| run | frames/s (end to end) | frame-to-frame motion (px) | error vs truth (px) |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['fps']:.1f} | {r['jitter_px']:.2f} | {r['error_px']:.2f} |")
    j0 = rows["static, noisy boxes"]["jitter_px"]
    j1 = rows["static, noisy boxes, --smooth"]["jitter_px"]
    print(f"jitter on the static figure: {j0:.2f} -> {j1:.2f} px with --smooth "
          f"({j0 / j1:.1f}x lower); lag added on the moving figure: {lag:.2f} frames")
    print(f"predict --track --smooth: {rows['moving, --track --smooth']['fps']:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
