"""Top-down prediction on an image or a video: crops, model, tracking, smoothing, outputs.

Each frame's crops come from a COCO detection file (boxes of ``image_id`` = the frame index
for a video; every box for an image), from the previous frame's keypoints (``track``, the
MoveNet rule of ``fptflite.serving.tracking``) or from the whole frame. Crops are affine
warps (bilinear, black outside the frame) to the model's input; keypoints are mapped back
with the inverse warp. Outputs: the annotated image/video and COCO-results JSON, both
written atomically (a failed run leaves no partial file). Uses numpy, OpenCV and LiteRT only
when the model is a .tflite.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import cv2
import numpy as np

from fptflite.data.coco import DataError, read_json
from fptflite.data.geometry import apply_affine, box_to_center_size, crop_matrix
from fptflite.keypoints import PERSON_CATEGORY
from fptflite.serving.one_euro import OneEuroFilter
from fptflite.serving.tracking import movenet_crop_region
from fptflite.utils.io import atomic_path, write_json_atomic
from fptflite.utils.progress import ProgressCounter
from fptflite.visualization import draw_skeleton

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
SCORE_THRESHOLD = 0.2


class PredictError(ValueError):
    """Bad input for prediction; the message names the file and the problem."""


@dataclasses.dataclass
class PredictOptions:
    track: bool = False
    smooth: bool = False
    min_cutoff: float = 1.0
    beta: float = 0.05
    d_cutoff: float = 1.0
    box_score_threshold: float = 0.0
    draw_threshold: float = SCORE_THRESHOLD
    progress: bool = True


@dataclasses.dataclass
class Region:
    """A crop: centre [2] and size [2] = (width, height) in frame pixels, with a box score."""

    center: np.ndarray
    size: np.ndarray
    score: float = 1.0


def load_boxes(path: str, min_score: float = 0.0) -> dict[int, list[tuple[np.ndarray, float]]]:
    """COCO detections -> image_id -> [(box [x, y, w, h], score)] (person boxes only).

    Raises:
        PredictError: unreadable file, a malformed record (named by index), or no boxes.
    """
    try:
        records = read_json(path, "detection", list)
    except DataError as e:
        raise PredictError(str(e)) from e
    boxes: dict[int, list] = {}
    for i, r in enumerate(records):
        src = f"{path}, record {i}"
        if not isinstance(r, dict) or "bbox" not in r or "image_id" not in r:
            raise PredictError(f"{src}: expected a dict with image_id and bbox, got {r!r:.100}")
        b = r["bbox"]
        if not (isinstance(b, list) and len(b) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
            raise PredictError(f"{src}: bbox must be [x, y, w, h] numbers, got {b!r:.100}")
        if not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
            raise PredictError(f"{src}: bbox {b} has zero, negative or non-finite size")
        if r.get("category_id", 1) != PERSON_CATEGORY["id"]:
            continue
        score = float(r.get("score", 1.0))
        if score >= min_score:
            boxes.setdefault(int(r["image_id"]), []).append((np.asarray(b, float), score))
    if not boxes:
        raise PredictError(f"{path}: no person boxes (with score >= {min_score})")
    return boxes


def _box_regions(boxes, width: int, height: int, aspect: float, source: str) -> list[Region]:
    regions = []
    for box, score in boxes:
        x, y, w, h = box
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise PredictError(f"{source}: box {list(np.round(box, 1))} lies outside the "
                               f"{width}x{height} frame")
        c, s = box_to_center_size(box, aspect)
        regions.append(Region(c, s, score))
    return regions


def _whole_frame(width: int, height: int, aspect: float) -> Region:
    c, s = box_to_center_size([0, 0, width, height], aspect, padding=1.0)
    return Region(c, s)


def predict_region(predictor, frame: np.ndarray, region: Region
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [K, 2] (frame pixels, pixel centres) and scores [K] for one crop."""
    h, w = predictor.input_size
    m = crop_matrix(region.center, region.size, (h, w))
    crop = cv2.warpAffine(frame, m[:2], (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    xy, scores = predictor(crop)
    return apply_affine(np.linalg.inv(m), xy), np.asarray(scores, np.float64)


def coco_result(frame_index: int, xy: np.ndarray, scores: np.ndarray, box_score: float
                ) -> dict:
    kps = np.concatenate([xy, scores[:, None]], axis=1)
    return {"image_id": int(frame_index), "frame_index": int(frame_index),
            "category_id": PERSON_CATEGORY["id"],
            "keypoints": [round(float(v), 3) for v in kps.reshape(-1)],
            "score": round(float(scores.mean() * box_score), 5)}


def annotate(frame: np.ndarray, people: list[tuple[np.ndarray, np.ndarray]],
             threshold: float) -> np.ndarray:
    """Skeletons and each person's score drawn on a copy of an RGB frame."""
    out = frame
    for xy, scores in people:
        out = draw_skeleton(out, xy, scores, threshold)
        ok = scores > threshold
        anchor = xy[ok].min(axis=0) if ok.any() else xy.mean(axis=0)
        cv2.putText(out, f"{scores.mean():.2f}", (int(anchor[0]), max(int(anchor[1]) - 6, 12)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return out


class FramePredictor:
    """Per-frame logic shared by images and videos: regions, model, tracking, smoothing."""

    def __init__(self, predictor, opts: PredictOptions, fps: float = 30.0):
        self.predictor, self.opts, self.fps = predictor, opts, fps
        h, w = predictor.input_size
        self.aspect = w / h
        self._next: Region | None = None
        self._filters: dict[int, OneEuroFilter] = {}

    def regions(self, frame_index: int, width: int, height: int, boxes, source: str
                ) -> list[Region]:
        if boxes is not None:
            return _box_regions(boxes.get(frame_index, []), width, height, self.aspect,
                                f"{source}, frame {frame_index}")
        if self.opts.track and self._next is not None:
            return [self._next]
        return [_whole_frame(width, height, self.aspect)]

    def __call__(self, frame: np.ndarray, frame_index: int, boxes, source: str):
        height, width = frame.shape[:2]
        people = []
        for n, region in enumerate(self.regions(frame_index, width, height, boxes, source)):
            xy, scores = predict_region(self.predictor, frame, region)
            if self.opts.track and n == 0:
                sq = movenet_crop_region(xy + 0.5, scores, width, height)
                self._next = Region(sq.center - 0.5, np.array([sq.size, sq.size / self.aspect]))
            if self.opts.smooth:
                f = self._filters.setdefault(n, OneEuroFilter(
                    self.opts.min_cutoff, self.opts.beta, self.opts.d_cutoff))
                xy = f(xy, frame_index / self.fps)
            people.append((xy, scores, region.score))
        return people


def _read_image(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise PredictError(f"image not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise PredictError(f"cannot read image {path}: not an image file or corrupt")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def predict_image(predictor, image_path: str, out_path: str, json_path: str,
                  boxes_path: str | None = None, opts: PredictOptions | None = None) -> dict:
    """Predicts every person of one image; writes the annotated image and the JSON."""
    opts = opts or PredictOptions()
    t0 = time.perf_counter()
    frame = _read_image(image_path)
    boxes = None
    if boxes_path:
        all_boxes = load_boxes(boxes_path, opts.box_score_threshold)
        boxes = {0: [b for v in all_boxes.values() for b in v]}
    people = FramePredictor(predictor, dataclasses.replace(opts, smooth=False))(
        frame, 0, boxes, image_path)
    results = [coco_result(0, xy, s, bs) for xy, s, bs in people]
    out = annotate(frame, [(xy, s) for xy, s, _ in people], opts.draw_threshold)
    with atomic_path(out_path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
            raise PredictError(f"cannot write image {out_path} (unknown extension?)")
    write_json_atomic(json_path, results)
    return {"frames": 1, "people": len(results), "seconds": time.perf_counter() - t0,
            "incomplete": None}


def _open_video(path: str):
    if not os.path.isfile(path):
        raise PredictError(f"video not found: {path}")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise PredictError(f"cannot open video {path}: not a video file or unsupported codec")
    return cap


def predict_video(predictor, video_path: str, out_path: str, json_path: str,
                  boxes_path: str | None = None, opts: PredictOptions | None = None) -> dict:
    """Predicts every frame of a video; writes the annotated video and the JSON.

    A video that ends before its announced frame count (truncated, or a frame that cannot be
    decoded) is processed up to there: the outputs hold the frames read, and the returned
    dict's "incomplete" names the problem.

    Raises:
        PredictError: unreadable video, no readable frame, bad boxes.
    """
    opts = opts or PredictOptions()
    boxes = load_boxes(boxes_path, opts.box_score_threshold) if boxes_path else None
    cap = _open_video(video_path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in VIDEO_CODECS:
        raise PredictError(f"output video {out_path}: use one of {sorted(VIDEO_CODECS)}")
    frames = FramePredictor(predictor, opts, fps)
    counter = ProgressCounter(max(expected, 1), f"predicting {os.path.basename(video_path)}",
                              stream=sys.stderr, enabled=opts.progress)
    results, n, incomplete, writer = [], 0, None, None
    t0 = time.perf_counter()
    try:
        with atomic_path(out_path) as tmp:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if writer is None:
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext]),
                                             fps, (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise PredictError(f"cannot write video {out_path}")
                people = frames(frame, n, boxes, video_path)
                results += [coco_result(n, xy, s, bs) for xy, s, bs in people]
                out = annotate(frame, [(xy, s) for xy, s, _ in people], opts.draw_threshold)
                writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                n += 1
                counter.update(1)
            if n == 0:
                raise PredictError(f"video {video_path} has no readable frame")
            writer.release()
            writer = None
    finally:
        if writer is not None:
            writer.release()
        cap.release()
    if expected and n < expected:
        incomplete = (f"video {video_path} ended early: read {n} of {expected} frames "
                      f"(truncated file or undecodable frame {n}); outputs hold frames "
                      f"0..{n - 1}")
    write_json_atomic(json_path, results)
    return {"frames": n, "people": len(results), "seconds": time.perf_counter() - t0,
            "incomplete": incomplete}
