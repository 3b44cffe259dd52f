"""Reading COCO person keypoint annotations and detections into validated person instances.

Every record is checked on the way in: a bad file, image entry, box or keypoint raises
``DataError`` naming the file and the record (or, where the caller allows it, is skipped and
counted in ``LoadReport``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from fptflite.data.geometry import box_to_center_size
from fptflite.keypoints import NUM_KEYPOINTS, PERSON_CATEGORY

PERSON_CATEGORY_ID = PERSON_CATEGORY["id"]
# Detections carry no keypoints: one shared read-only [K, 3] zero array instead of one per box.
_NO_KEYPOINTS = np.zeros((NUM_KEYPOINTS, 3))
_NO_KEYPOINTS.flags.writeable = False


class DataError(ValueError):
    """A data file or record is missing or invalid; the message names it."""


@dataclasses.dataclass
class PersonInstance:
    """One person crop to process.

    Attributes:
        image_id: COCO image id.
        image_path: absolute path of the image file.
        center: [2] crop centre in image pixels.
        size: [2] crop (width, height) in image pixels (aspect and 1.25 padding applied).
        keypoints: [K, 3] (x, y, v) in image pixels; zeros for detections.
        box_score: detector score (1 for ground-truth boxes).
        area: box area used by OKS-NMS.
        ann_id: annotation id, or -1 for a detection.
        head_box: MPII only: [2, 2] head box ((x1, y1), (x2, y2)) in image pixels, the PCKh
            normaliser; None where the record has none.
    """

    image_id: int
    image_path: str
    center: np.ndarray
    size: np.ndarray
    keypoints: np.ndarray
    box_score: float = 1.0
    area: float = 0.0
    ann_id: int = -1
    head_box: np.ndarray | None = None


@dataclasses.dataclass
class LoadReport:
    """What loading kept and skipped, with reasons (for a summary at the end of a run)."""

    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def summary(self) -> str:
        parts = [f"{n} {why}" for why, n in self.skipped.most_common()]
        return f"kept {self.kept} persons; skipped " + (", ".join(parts) if parts else "none")


def read_json(path: str, kind: str, expected: type):
    """Reads a JSON file of ``expected`` top-level type; errors name the ``kind`` and path."""
    if not os.path.isfile(path):
        raise DataError(f"{kind} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{kind} file {path} is not valid JSON: {e}") from e
    if not isinstance(data, expected):
        raise DataError(f"{kind} file {path}: expected a JSON {expected.__name__} at the top "
                        "level")
    return data


def load_coco(ann_file: str):
    """Loads an annotation file with pycocotools, quietly, with a clear error if it is bad."""
    from pycocotools.coco import COCO

    dataset = read_json(ann_file, "annotation", dict)
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"annotation file {ann_file}: missing or invalid '{key}' list")
    for im in dataset["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"annotation file {ann_file}: image entry {im!r:.120} lacks "
                            "'id' or 'file_name'")
    for a in dataset["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a or "id" not in a:
            raise DataError(f"annotation file {ann_file}: annotation {a!r:.120} lacks "
                            "'id' or 'image_id'")
        _check_category(a, f"{ann_file}, annotation {a['id']} (image {a['image_id']})")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def safe_image_path(image_dir: str, file_name: str, source: str) -> str:
    """Joins ``file_name`` to ``image_dir``, refusing names that escape the folder."""
    if not isinstance(file_name, str) or not file_name:
        raise DataError(f"{source}: invalid image file_name {file_name!r}")
    if os.path.isabs(file_name) or ".." in file_name.replace("\\", "/").split("/"):
        raise DataError(f"{source}: image file_name {file_name!r} escapes the image "
                        f"directory {image_dir}")
    root = os.path.realpath(image_dir)
    path = os.path.realpath(os.path.join(root, file_name))
    if os.path.commonpath([root, path]) != root:
        raise DataError(f"{source}: image file_name {file_name!r} escapes the image "
                        f"directory {image_dir}")
    return path


def _numbers(values, source: str, what: str) -> np.ndarray:
    """A list of JSON numbers as float64; anything else (strings, null, nested) is an error."""
    if not isinstance(values, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{source}: {what} must be a list of numbers, got {values!r:.120}")
    return np.asarray(values, dtype=np.float64)


def _check_category(record: dict, source: str) -> bool:
    """True for a person record; a missing or non-integer category_id is an error."""
    cat = record.get("category_id")
    if not isinstance(cat, int) or isinstance(cat, bool):
        raise DataError(f"{source}: missing or invalid category_id {cat!r}")
    return cat == PERSON_CATEGORY_ID


def _check_box(box, source: str) -> np.ndarray:
    b = _numbers(box, source, "bbox")
    if b.shape != (4,):
        raise DataError(f"{source}: bbox must be [x, y, w, h], got {box!r}")
    if not np.all(np.isfinite(b)):
        raise DataError(f"{source}: bbox {box} is not finite")
    if b[2] <= 0 or b[3] <= 0:
        raise DataError(f"{source}: bbox {box} has zero or negative size")
    return b


def _check_keypoints(kps, image: dict, source: str) -> np.ndarray:
    k = _numbers(kps, source, "keypoints")
    if k.shape != (NUM_KEYPOINTS * 3,):
        raise DataError(f"{source}: keypoints must be {NUM_KEYPOINTS} x [x, y, v]")
    k = k.reshape(NUM_KEYPOINTS, 3)
    if not np.all(np.isfinite(k)):
        raise DataError(f"{source}: keypoints are not finite")
    if not np.all(np.isin(k[:, 2], (0, 1, 2))):
        raise DataError(f"{source}: keypoint visibility must be 0, 1 or 2")
    labelled = k[:, 2] > 0
    w, h = image.get("width"), image.get("height")
    if w and h and labelled.any():
        xy = k[labelled, :2]
        if (xy < -1).any() or (xy[:, 0] > w + 1).any() or (xy[:, 1] > h + 1).any():
            raise DataError(f"{source}: labelled keypoints lie outside the {w}x{h} image")
    return k


def load_instances(
    ann_file: str,
    image_dir: str,
    aspect_ratio: float,
    det_file: str | None = None,
    det_score_threshold: float = 0.0,
    training: bool = False,
    skip_invalid: bool = False,
    check_images_exist: bool = True,
) -> tuple[list[PersonInstance], LoadReport]:
    """Reads person instances for top-down training or evaluation.

    Ground-truth boxes (``det_file`` None): non-crowd persons with at least one labelled
    keypoint (SimpleBaseline/HRNet's rule for both training and GT-box evaluation).
    Detections: every box of a person detection with score >= ``det_score_threshold``.

    Args:
        ann_file: COCO person keypoints JSON.
        image_dir: folder that ``file_name`` entries are relative to.
        aspect_ratio: input width / height, for the crop size.
        det_file: optional detections JSON (list of {image_id, category_id, bbox, score}).
        det_score_threshold: minimum detection score.
        training: affects nothing but the log wording; kept for symmetry.
        skip_invalid: skip and count invalid records instead of raising.
        check_images_exist: raise (or skip) when an image file is missing.

    Returns:
        (instances, report).
    """
    coco = load_coco(ann_file)
    report = LoadReport()
    images = coco.imgs
    instances: list[PersonInstance] = []

    def fail(reason_key: str, message: str):
        if not skip_invalid:
            raise DataError(message)
        report.skipped[reason_key] += 1
        logging.warning("skipping: %s", message)

    path_cache: dict[int, str] = {}

    def image_path(image_id, source) -> str | None:
        if image_id not in path_cache:
            if image_id not in images:
                fail("unknown image id", f"{source}: image_id {image_id} is not in {ann_file}")
                return None
            path = safe_image_path(image_dir, images[image_id]["file_name"],
                                   f"{ann_file}, image {image_id}")
            if check_images_exist and not os.path.isfile(path):
                fail("missing image", f"{ann_file}, image {image_id}: file not found: {path}")
                return None
            path_cache[image_id] = path
        return path_cache[image_id]

    def add(image_id, box, kps, score: float, ann_id: int, source: str) -> None:
        path = image_path(image_id, source)
        if path is not None:
            center, size = box_to_center_size(box, aspect_ratio)
            instances.append(PersonInstance(image_id, path, center, size, kps, score,
                                            float(size[0] * size[1]), ann_id))

    if det_file is None:
        for ann in coco.dataset["annotations"]:
            source = f"{ann_file}, annotation {ann['id']} (image {ann['image_id']})"
            try:
                if not _check_category(ann, source):
                    continue
                if ann.get("iscrowd", 0):
                    report.skipped["crowd"] += 1
                    continue
                raw = ann.get("keypoints")
                if not raw or ann.get("num_keypoints", 1) == 0:
                    report.skipped["no keypoints"] += 1
                    continue
                kps = _check_keypoints(raw, images.get(ann["image_id"], {}), source)
                if not (kps[:, 2] > 0).any():
                    report.skipped["no keypoints"] += 1
                    continue
                box = _check_box(ann.get("bbox"), source)
            except DataError as e:
                fail("invalid annotation", str(e))
                continue
            add(ann["image_id"], box, kps, 1.0, int(ann["id"]), source)
    else:
        dets = read_json(det_file, "detection", list)
        for i, det in enumerate(dets):
            source = f"{det_file}, detection {i}"
            if not isinstance(det, dict) or "image_id" not in det or "score" not in det:
                fail("invalid detection", f"{source}: needs image_id, bbox and score")
                continue
            try:
                if not _check_category(det, source):
                    continue
                score = _numbers([det["score"]], source, "score")[0]
                if not np.isfinite(score):
                    raise DataError(f"{source}: score {det['score']} is not finite")
                if not score >= det_score_threshold:
                    report.skipped["below score threshold"] += 1
                    continue
                box = _check_box(det.get("bbox"), source)
            except DataError as e:
                fail("invalid detection", str(e))
                continue
            add(det["image_id"], box, _NO_KEYPOINTS, float(score), -1, source)
    report.kept = len(instances)
    if not instances:
        raise DataError(f"no usable person instances in {det_file or ann_file}")
    logging.info("%s: %s", det_file or ann_file, report.summary())
    return instances, report


def check_image(path: str) -> str | None:
    """Returns None if ``path`` decodes as an image, else the reason it does not."""
    import cv2

    if not os.path.isfile(path):
        return "file not found"
    img = cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    return None if img is not None and img.size else "cannot be decoded as an image"


def drop_unreadable_images(instances: list[PersonInstance], report: LoadReport
                           ) -> list[PersonInstance]:
    """Decodes every distinct image once; drops (and counts) instances whose image is bad."""
    bad = {}
    for path in sorted({i.image_path for i in instances}):
        reason = check_image(path)
        if reason:
            bad[path] = reason
            logging.warning("skipping image %s: %s", path, reason)
    kept = [i for i in instances if i.image_path not in bad]
    report.skipped["unreadable image"] += len(instances) - len(kept)
    report.kept = len(kept)
    return kept


def find_unreadable_image(instances: Sequence[PersonInstance], candidates, error: Exception
                          ) -> DataError:
    """The error to raise when an input pipeline failed on one of ``candidates`` (indices
    into ``instances``): names the first unreadable image file, its image id and record."""
    for i in candidates:
        inst = instances[int(i)]
        reason = check_image(inst.image_path)
        if reason:
            record = f"annotation {inst.ann_id}" if inst.ann_id >= 0 else "a detection box"
            return DataError(f"image {inst.image_path} (image {inst.image_id}, {record}, "
                             f"instance {int(i)}): {reason}")
    return DataError(f"input pipeline failed on instances {list(candidates)[:8]}...: {error}")
