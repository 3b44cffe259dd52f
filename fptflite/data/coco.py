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

import cv2
import numpy as np
from absl import logging
from pycocotools.coco import COCO

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


def _read_annotation_file(ann_file: str) -> dict:
    """The annotation JSON, checked to hold ``images``, ``annotations`` and ``categories``."""
    dataset = read_json(ann_file, "annotation", dict)
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise DataError(f"annotation file {ann_file}: missing or invalid '{key}' list")
    return dataset


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _image_entry_problem(entry: dict) -> str | None:
    """What is wrong with an ``images`` entry whose id is valid, or None.

    ``file_name`` must be a non-empty string; ``width`` and ``height`` may be absent (the
    keypoint range check is then skipped) but, when present, must be positive finite numbers.
    """
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        return f"missing or invalid file_name {name!r:.120}"
    for key in ("width", "height"):
        value = entry.get(key, 1)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                and np.isfinite(value) and value > 0):
            return f"{key} must be a positive number, got {value!r:.120}"
    return None


def _fail_always(reason_key: str, message: str):
    raise DataError(message)


def _index_images(entries: list, ann_file: str, fail=_fail_always
                  ) -> tuple[dict[int, dict], set[int]]:
    """Validates the ``images`` entries and indexes the valid ones by id.

    Args:
        entries: the ``images`` list of ``ann_file``.
        ann_file: named, with the entry's index and id, in every message.
        fail: ``fail(reason_key, message)`` for each invalid entry: raises, or counts it.

    Returns:
        (id -> entry of the valid entries, ids of the invalid entries: an entry with a bad
        field, or every entry of a duplicated id).
    """
    images: dict[int, dict] = {}
    first_index: dict[int, int] = {}
    bad: set[int] = set()
    for i, entry in enumerate(entries):
        source = f"{ann_file}, image entry {i}"
        image_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not _is_int(image_id):
            what = f"missing or non-integer id {image_id!r:.120}" if isinstance(entry, dict) \
                else f"expected a JSON object, got {entry!r:.120}"
            fail("invalid image entry", f"{source}: {what}")
            continue
        source = f"{source} (id {image_id})"
        if image_id in first_index:
            problem = f"duplicate id, also that of image entry {first_index[image_id]}"
        else:
            first_index[image_id] = i
            problem = _image_entry_problem(entry)
        if problem is None:
            images[image_id] = entry
            continue
        fail("invalid image entry", f"{source}: {problem}")
        bad.add(image_id)
        images.pop(image_id, None)
    return images, bad


def _check_annotation_records(annotations: list, ann_file: str) -> None:
    """Every annotation is a dict with an id, an image_id and a valid category_id."""
    for a in annotations:
        if not isinstance(a, dict) or "image_id" not in a or "id" not in a:
            raise DataError(f"annotation file {ann_file}: annotation {a!r:.120} lacks "
                            "'id' or 'image_id'")
        _check_category(a, f"{ann_file}, annotation {a['id']} (image {a['image_id']})")


def load_coco(ann_file: str):
    """Loads an annotation file with pycocotools, quietly, with a clear error if it is bad.

    Raises:
        DataError: unreadable file, an invalid ``images`` entry or annotation (named).
    """
    dataset = _read_annotation_file(ann_file)
    _index_images(dataset["images"], ann_file)
    _check_annotation_records(dataset["annotations"], ann_file)
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


class _InstanceReader:
    """One ``load_instances`` call: the validated images, the report and the instances."""

    def __init__(self, ann_file: str, image_dir: str, aspect_ratio: float,
                 skip_invalid: bool, check_images_exist: bool):
        self.ann_file, self.image_dir, self.aspect_ratio = ann_file, image_dir, aspect_ratio
        self.skip_invalid, self.check_images_exist = skip_invalid, check_images_exist
        self.report = LoadReport()
        self.instances: list[PersonInstance] = []
        self._paths: dict[int, str] = {}
        dataset = _read_annotation_file(ann_file)
        self.images, self.bad_images = _index_images(dataset["images"], ann_file, self.fail)
        _check_annotation_records(dataset["annotations"], ann_file)
        self.annotations = dataset["annotations"]

    def fail(self, reason_key: str, message: str) -> None:
        """Raises ``DataError(message)``, or (skip_invalid) counts and logs it."""
        if not self.skip_invalid:
            raise DataError(message)
        self.report.skipped[reason_key] += 1
        logging.warning("skipping: %s", message)

    def image(self, image_id) -> dict:
        """The valid ``images`` entry of ``image_id``, or {} (unknown, invalid, not an int)."""
        return self.images.get(image_id, {}) if _is_int(image_id) else {}

    def image_path(self, image_id, source: str) -> str | None:
        """The image file of ``image_id``, or None after a skipped problem."""
        if not _is_int(image_id) or (image_id not in self.images
                                     and image_id not in self.bad_images):
            self.fail("unknown image id",
                      f"{source}: image_id {image_id} is not in {self.ann_file}")
            return None
        if image_id in self._paths:
            return self._paths[image_id]
        if image_id in self.bad_images:
            self.report.skipped["person on an invalid image entry"] += 1
            return None
        try:
            path = safe_image_path(self.image_dir, self.images[image_id]["file_name"],
                                   f"{self.ann_file}, image {image_id}")
        except DataError as e:
            self.fail("invalid image entry", str(e))
            self.bad_images.add(image_id)
            self.report.skipped["person on an invalid image entry"] += 1
            return None
        if self.check_images_exist and not os.path.isfile(path):
            self.fail("missing image",
                      f"{self.ann_file}, image {image_id}: file not found: {path}")
            return None
        self._paths[image_id] = path
        return path

    def add(self, image_id, box, kps, score: float, ann_id: int, source: str) -> None:
        path = self.image_path(image_id, source)
        if path is not None:
            center, size = box_to_center_size(box, self.aspect_ratio)
            self.instances.append(PersonInstance(image_id, path, center, size, kps, score,
                                                 float(size[0] * size[1]), ann_id))

    def read_annotations(self) -> None:
        """Ground-truth persons: non-crowd, with at least one labelled keypoint."""
        for ann in self.annotations:
            source = f"{self.ann_file}, annotation {ann['id']} (image {ann['image_id']})"
            try:
                if not _check_category(ann, source):
                    continue
                if ann.get("iscrowd", 0):
                    self.report.skipped["crowd"] += 1
                    continue
                raw = ann.get("keypoints")
                if not raw or ann.get("num_keypoints", 1) == 0:
                    self.report.skipped["no keypoints"] += 1
                    continue
                kps = _check_keypoints(raw, self.image(ann["image_id"]), source)
                if not (kps[:, 2] > 0).any():
                    self.report.skipped["no keypoints"] += 1
                    continue
                box = _check_box(ann.get("bbox"), source)
            except DataError as e:
                self.fail("invalid annotation", str(e))
                continue
            self.add(ann["image_id"], box, kps, 1.0, int(ann["id"]), source)

    def read_detections(self, det_file: str, score_threshold: float) -> None:
        """Every person detection box scoring ``score_threshold`` or more."""
        for i, det in enumerate(read_json(det_file, "detection", list)):
            source = f"{det_file}, detection {i}"
            if not isinstance(det, dict) or "image_id" not in det or "score" not in det:
                self.fail("invalid detection", f"{source}: needs image_id, bbox and score")
                continue
            try:
                if not _check_category(det, source):
                    continue
                score = _numbers([det["score"]], source, "score")[0]
                if not np.isfinite(score):
                    raise DataError(f"{source}: score {det['score']} is not finite")
                if not score >= score_threshold:
                    self.report.skipped["below score threshold"] += 1
                    continue
                box = _check_box(det.get("bbox"), source)
            except DataError as e:
                self.fail("invalid detection", str(e))
                continue
            self.add(det["image_id"], box, _NO_KEYPOINTS, float(score), -1, source)


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

    Every ``images`` entry is validated (integer ``id``, unique; non-empty string
    ``file_name`` inside ``image_dir``; ``width``/``height`` positive numbers when present).
    With ``skip_invalid``, an invalid entry counts as "invalid image entry" and the persons
    of its image as "person on an invalid image entry".

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

    Raises:
        DataError: a bad file or record (unless skipped), naming the file and the record; or
            no usable person instance.
    """
    reader = _InstanceReader(ann_file, image_dir, aspect_ratio, skip_invalid,
                             check_images_exist)
    if det_file is None:
        reader.read_annotations()
    else:
        reader.read_detections(det_file, det_score_threshold)
    instances, report = reader.instances, reader.report
    report.kept = len(instances)
    if not instances:
        raise DataError(f"no usable person instances in {det_file or ann_file}")
    logging.info("%s: %s", det_file or ann_file, report.summary())
    return instances, report


def check_image(path: str) -> str | None:
    """Returns None if ``path`` decodes as an image, else the reason it does not."""
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
