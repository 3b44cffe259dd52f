"""Top-down prediction on an image or a video: crops, model, tracking, smoothing, outputs.

Each frame's crops come from a COCO detection file (boxes of ``image_id`` = the frame index
for a video; for an image, the boxes of that image's COCO id, given or looked up by file name
in a COCO annotation file), from the previous frame's keypoints (``track``, the MoveNet rule
of ``fptflite.serving.tracking``) or from the whole frame. Crops are affine
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


def _image_id(value, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PredictError(f"{source}: image_id must be an integer, got {value!r:.100}")
    return value


def _check_detection(r, src: str) -> tuple[np.ndarray, float]:
    """Box [x, y, w, h] and score of one detection record."""
    if not isinstance(r, dict) or "bbox" not in r or "image_id" not in r:
        raise PredictError(f"{src}: expected a dict with image_id and bbox, got {r!r:.100}")
    b = r["bbox"]
    if not (isinstance(b, list) and len(b) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
        raise PredictError(f"{src}: bbox must be [x, y, w, h] numbers, got {b!r:.100}")
    if not np.all(np.isfinite(b)) or b[2] <= 0 or b[3] <= 0:
        raise PredictError(f"{src}: bbox {b} has zero, negative or non-finite size")
    score = r.get("score", 1.0)
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not np.isfinite(score):
        raise PredictError(f"{src}: score must be a finite number, got {score!r:.100}")
    return np.asarray(b, float), float(score)


def load_boxes(path: str, min_score: float = 0.0) -> dict[int, list[tuple[np.ndarray, float]]]:
    """COCO detections -> image_id -> [(box [4] = [x, y, w, h], score)] (person boxes only).

    Every image id of a person detection is a key, even when none of its boxes scores
    ``min_score`` or more (its list is then empty).

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
        box, score = _check_detection(r, src)
        if r.get("category_id", 1) != PERSON_CATEGORY["id"]:
            continue
        kept = boxes.setdefault(_image_id(r["image_id"], src), [])
        if score >= min_score:
            kept.append((box, score))
    if not any(boxes.values()):
        raise PredictError(f"{path}: no person boxes (with score >= {min_score})")
    return boxes


def _id_list(ids) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:10])) + (f", ... ({len(ids)} ids)" if len(ids) > 10 else "")


def boxes_of_image(path: str, image_id: int | None, min_score: float = 0.0
                   ) -> tuple[int, list[tuple[np.ndarray, float]]]:
    """The person boxes of one image in a COCO detection file, and that image's id.

    Args:
        path: COCO detection JSON.
        image_id: the image's COCO id; None only when every person detection of the file
            belongs to one image (that image's id is then used).
        min_score: boxes scoring below are dropped.

    Returns:
        (image_id, [(box [4] = [x, y, w, h], score)]).

    Raises:
        PredictError: the file holds several image ids and none is given; the image has no
            person detection in the file, or none scoring ``min_score`` or more.
    """
    boxes = load_boxes(path, min_score)
    if image_id is None:
        if len(boxes) > 1:
            raise PredictError(
                f"{path} holds person detections of {len(boxes)} images (image ids "
                f"{_id_list(boxes)}): give the image's COCO id (--image_id) or an annotation "
                "file to look it up by file name (--ann_file)")
        image_id = next(iter(boxes))
    if image_id not in boxes:
        raise PredictError(f"{path}: no person detection of image {image_id} (the file has "
                           f"image ids {_id_list(boxes)})")
    if not boxes[image_id]:
        raise PredictError(f"{path}: no person box of image {image_id} with score >= "
                           f"{min_score}")
    return image_id, boxes[image_id]


def coco_image_id(ann_file: str, image_path: str) -> int:
    """The COCO id of an image: that of the ``images`` entry of ``ann_file`` whose
    ``file_name`` equals the image's basename (the file name itself is never parsed).

    Raises:
        PredictError: unreadable file, no (or an ambiguous) matching entry, or an invalid id.
    """
    try:
        images = read_json(ann_file, "annotation", dict).get("images")
    except DataError as e:
        raise PredictError(str(e)) from e
    if not isinstance(images, list):
        raise PredictError(f"annotation file {ann_file}: missing or invalid 'images' list")
    name = os.path.basename(image_path)
    ids = {_image_id(im.get("id"), f"annotation file {ann_file}, image entry {i}")
           for i, im in enumerate(images) if isinstance(im, dict) and im.get("file_name") == name}
    if not ids:
        raise PredictError(f"annotation file {ann_file}: no 'images' entry has file_name "
                           f"{name!r} (the image {image_path})")
    if len(ids) > 1:
        raise PredictError(f"annotation file {ann_file}: several 'images' entries have "
                           f"file_name {name!r}, with ids {_id_list(ids)}")
    return ids.pop()


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


def coco_result(frame_index: int, xy: np.ndarray, scores: np.ndarray, box_score: float,
                image_id: int | None = None) -> dict:
    """One COCO-results record from keypoints [K, 2] and scores [K].

    ``image_id`` defaults to the frame index (videos).
    """
    kps = np.concatenate([xy, scores[:, None]], axis=1)
    image_id = frame_index if image_id is None else image_id
    return {"image_id": int(image_id), "frame_index": int(frame_index),
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
                  boxes_path: str | None = None, opts: PredictOptions | None = None,
                  image_id: int | None = None) -> dict:
    """Predicts every person of one image; writes the annotated image and the JSON.

    Args:
        predictor: crop [H, W, 3] uint8 -> (keypoints [K, 2], scores [K]).
        image_path, out_path, json_path: the image, the annotated image and the
            COCO-results JSON to write.
        boxes_path: COCO detection JSON; only the boxes of ``image_id`` are used (see
            ``boxes_of_image``). None: one crop of the whole image.
        opts: prediction options (``smooth`` does not apply to an image).
        image_id: the image's COCO id. It is the ``image_id`` of every result; when None,
            that of a detection file holding a single image, else 0.

    Returns:
        {"frames": 1, "people", "seconds", "incomplete": None, "image_id"}.
    """
    opts = opts or PredictOptions()
    t0 = time.perf_counter()
    frame = _read_image(image_path)
    boxes = None
    if boxes_path:
        image_id, own = boxes_of_image(boxes_path, image_id, opts.box_score_threshold)
        boxes = {0: own}
    image_id = 0 if image_id is None else image_id
    people = FramePredictor(predictor, dataclasses.replace(opts, smooth=False))(
        frame, 0, boxes, image_path)
    results = [coco_result(0, xy, s, bs, image_id) for xy, s, bs in people]
    out = annotate(frame, [(xy, s) for xy, s, _ in people], opts.draw_threshold)
    with atomic_path(out_path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(out, cv2.COLOR_RGB2BGR)):
            raise PredictError(f"cannot write image {out_path} (unknown extension?)")
    write_json_atomic(json_path, results)
    return {"frames": 1, "people": len(results), "seconds": time.perf_counter() - t0,
            "incomplete": None, "image_id": image_id}


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
