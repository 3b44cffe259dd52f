"""Reading MPII Human Pose annotations (the JSON layout of the common pose codebases).

The file is a JSON list with one record per person::

    {"image": "015601864.jpg", "center": [x, y], "scale": s, "joints": [[x, y] x 16],
     "joints_vis": [0 or 1 x 16], "head_box": [x1, y1, x2, y2]  (optional)}

``scale`` is the person's box height / 200. Coordinates are MATLAB-style 1-based pixels, as in
the official annotation (SimpleBaseline/HRNet subtract 1 when reading); this reader does the
same, so instances, predictions and head boxes are in 0-based pixels like COCO's.

The person box follows SimpleBaseline/HRNet: the centre moves down by 15 * scale pixels and
the box is a square of side 200 * scale, which ``geometry.box_to_center_size`` grows to the
input's aspect ratio and pads by 1.25 (HRNet's ``scale * 1.25``), so the same crop geometry,
pipeline and codec serve COCO and MPII.

Treatment of bad input (``DataError`` naming the file, the record and the problem, unless
``skip_invalid``, which skips and counts the record instead):

- not a list, a record that is not an object, no ``image``, missing or malformed ``center``,
  ``scale``, ``joints`` (16 x [x, y]) or ``joints_vis`` (16 values in {0, 1}), non-finite
  numbers, ``scale`` <= 0, a malformed ``head_box``: an error.
- a joint marked visible (1) that lies outside the image (by more than 1 pixel): kept out of
  training and evaluation as visibility 0 and counted in the report (the image size is read
  from the file header).
- a record without any visible joint: skipped and counted (nothing to train or score).
- a missing head box: allowed for training; ``evaluation.mpii`` refuses to score such a record
  and names it. Head boxes can also come from the evaluation ``.mat`` file (see
  ``load_head_boxes_mat``).
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from fptflite.data.coco import DataError, LoadReport, PersonInstance, read_json, safe_image_path
from fptflite.data.geometry import box_to_center_size
from fptflite.keypoints import MPII_NUM_KEYPOINTS

SCALE_PIXELS = 200.0  # MPII's ``scale`` is the box height in units of 200 pixels
CENTER_SHIFT = 15.0  # SimpleBaseline/HRNet move the centre down by 15 * scale pixels
HEAD_SIZE_FACTOR = 0.6  # the benchmark's head size: 0.6 x the head-box diagonal


def head_sizes(head_boxes: np.ndarray) -> np.ndarray:
    """The PCKh normaliser: 0.6 x the head-box diagonal. [N, 2, 2] -> [N]."""
    b = np.asarray(head_boxes, np.float64)
    return HEAD_SIZE_FACTOR * np.linalg.norm(b[:, 1] - b[:, 0], axis=-1)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(value, shape: tuple[int, ...], what: str, source: str) -> np.ndarray:
    """JSON numbers of a given nesting ``shape`` as float64 (strings, null, bools: errors)."""
    def ok(v, dims):
        if not dims:
            return _is_number(v)
        return isinstance(v, list) and len(v) == dims[0] and all(ok(x, dims[1:]) for x in v)

    if not ok(value, shape):
        raise DataError(f"{source}: '{what}' must be {'a number' if not shape else 'numbers'}"
                        f" of shape {list(shape)}, got {value!r:.80}")
    a = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise DataError(f"{source}: '{what}' is not finite: {value!r:.80}")
    return a


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image file's header (no full decode)."""
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(path) as im:
        return im.size


def _checked_image_size(path: str, source: str) -> tuple[int, int]:
    if not os.path.isfile(path):
        raise DataError(f"{source}: image file not found: {path}")
    try:
        return image_size(path)
    except Exception as e:  # Pillow raises several types for unreadable files
        raise DataError(f"{source}: cannot read the image header of {path}: {e}") from e


def parse_record(record, source: str, image_wh: tuple[int, int] | None
                 ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, int]:
    """Validates one record. Returns (center [2], joints [16, 3] 0-based with v in {0, 2},
    scale, head box [2, 2] (NaN if absent), number of visible joints dropped as outside)."""
    if not isinstance(record, dict):
        raise DataError(f"{source}: a record must be a JSON object")
    center = _numbers(record.get("center"), (2,), "center", source)
    scale = _numbers(record.get("scale"), (), "scale", source)
    if scale <= 0:
        raise DataError(f"{source}: 'scale' must be > 0, got {record.get('scale')!r}")
    joints = _numbers(record.get("joints"), (MPII_NUM_KEYPOINTS, 2), "joints", source) - 1.0
    vis = _numbers(record.get("joints_vis"), (MPII_NUM_KEYPOINTS,), "joints_vis", source)
    if not np.all(np.isin(vis, (0, 1))):
        raise DataError(f"{source}: 'joints_vis' values must be 0 or 1")
    visible = vis > 0
    outside = 0
    if image_wh is not None:
        w, h = image_wh
        out = visible & ((joints[:, 0] < -1) | (joints[:, 1] < -1) | (joints[:, 0] > w)
                         | (joints[:, 1] > h))
        outside = int(out.sum())
        visible &= ~out
    kps = np.zeros((MPII_NUM_KEYPOINTS, 3))
    kps[visible, :2] = joints[visible]
    kps[visible, 2] = 2
    box = np.full((2, 2), np.nan)
    if record.get("head_box") is not None:
        box = _numbers(record["head_box"], (4,), "head_box", source).reshape(2, 2) - 1.0
        if not np.all(box[1] > box[0]):
            raise DataError(f"{source}: 'head_box' {record['head_box']} is not [x1, y1, x2, y2]"
                            " with x2 > x1 and y2 > y1")
    return center - 1.0, kps, float(scale), box, outside


def person_box(center: np.ndarray, scale: float) -> list[float]:
    """The [x, y, w, h] box SimpleBaseline/HRNet crop around an MPII person."""
    side = scale * SCALE_PIXELS
    cx, cy = center[0], center[1] + CENTER_SHIFT * scale
    return [cx - side / 2, cy - side / 2, side, side]


def load_head_boxes_mat(path: str, num_records: int) -> np.ndarray:
    """Head boxes from the evaluation ``.mat`` file of SimpleBaseline/HRNet/mmpose
    (``gt_valid.mat`` / ``mpii_gt_val.mat``: ``headboxes_src`` [2, 2, N] in the order of the
    records of ``valid.json``), read with ``scipy.io.loadmat``.

    Returns:
        [N, 2, 2] ((x1, y1), (x2, y2)) in 0-based pixels.
    """
    try:
        from scipy.io import loadmat  # optional: the "mpii" extra, only for gt_valid.mat
    except ImportError as e:  # scipy is an optional dependency: pip install fptflite[mpii]
        raise ImportError(f"reading {path} needs scipy (pip install 'fptflite[mpii]')") from e
    if not os.path.isfile(path):
        raise DataError(f"head-box .mat file not found: {path}")
    try:
        mat = loadmat(path)
    except Exception as e:  # scipy raises several types for a corrupt file
        raise DataError(f"{path} is not a readable MATLAB file: {e}") from e
    if "headboxes_src" not in mat:
        raise DataError(f"{path}: no 'headboxes_src' array (expected the gt_valid.mat layout)")
    boxes = np.asarray(mat["headboxes_src"], np.float64)
    if boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
        raise DataError(f"{path}: 'headboxes_src' must be [2, 2, N], got {boxes.shape}")
    if boxes.shape[2] != num_records:
        raise DataError(f"{path}: {boxes.shape[2]} head boxes for {num_records} records")
    return boxes.transpose(2, 0, 1) - 1.0


def load_mpii(
    ann_file: str,
    image_dir: str,
    aspect_ratio: float,
    head_boxes_mat: str | None = None,
    skip_invalid: bool = False,
    check_images_exist: bool = True,
) -> tuple[list[PersonInstance], LoadReport]:
    """Reads an MPII JSON file into person instances for the COCO pipeline and codec.

    Args:
        ann_file: MPII annotations in the JSON layout (see the module docstring).
        image_dir: folder the ``image`` names are relative to.
        aspect_ratio: input width / height, for the crop size.
        head_boxes_mat: optional ``gt_valid.mat`` whose head boxes replace the records'.
        skip_invalid: skip and count invalid records instead of raising.
        check_images_exist: read every image's header (missing image: error or skip; visible
            joints outside the image become visibility 0). False skips both checks.

    Returns:
        (instances, report): one ``PersonInstance`` per kept record, with ``head_box`` [2, 2]
        (None where the record has none); ``ann_id`` is the record's index in the file and
        ``image_id`` numbers the distinct image names in order of first appearance.
    """
    records = read_json(ann_file, "MPII annotation", list)
    mat_boxes = load_head_boxes_mat(head_boxes_mat, len(records)) if head_boxes_mat else None
    report = LoadReport()
    instances = []
    image_ids: dict[str, int] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, rec in enumerate(records):
        name = rec.get("image") if isinstance(rec, dict) else None
        source = f"{ann_file}, record {i} (image {name!r})"
        try:
            path = safe_image_path(image_dir, name, source)
            if check_images_exist and path not in sizes:
                sizes[path] = _checked_image_size(path, source)
            center, kps, scale, box, outside = parse_record(rec, source, sizes.get(path))
        except DataError as e:
            if not skip_invalid:
                raise
            report.skipped["invalid record"] += 1
            logging.warning("skipping: %s", e)
            continue
        if outside:
            report.skipped["visible joints outside the image (set to v=0)"] += outside
        if not (kps[:, 2] > 0).any():
            report.skipped["no visible joints"] += 1
            continue
        if mat_boxes is not None:
            box = mat_boxes[i]
        c, size = box_to_center_size(person_box(center, scale), aspect_ratio)
        image_id = image_ids.setdefault(name, len(image_ids))
        instances.append(PersonInstance(image_id, path, c, size, kps, 1.0,
                                        float(size[0] * size[1]), i,
                                        None if np.isnan(box).any() else box))
    report.kept = len(instances)
    if not instances:
        raise DataError(f"no usable person records in {ann_file}")
    logging.info("%s: %s", ann_file, report.summary())
    return instances, report


def check_head_boxes(instances) -> None:
    """Raises ``DataError`` naming the records without a head box (PCKh needs one each)."""
    bad = [inst for inst in instances if inst.head_box is None]
    if bad:
        names = ", ".join(f"record {inst.ann_id} ({inst.image_path})" for inst in bad[:5])
        raise DataError(f"PCKh needs a head box for every record; {len(bad)} have none: "
                        f"{names}{', ...' if len(bad) > 5 else ''} (add 'head_box' to the "
                        "JSON or give the gt_valid.mat file)")


def is_mpii_file(ann_file: str) -> bool:
    """True for an MPII JSON list, False for a COCO JSON object (reads the first byte)."""
    with open(ann_file, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise DataError(f"annotation file {ann_file} is empty")
    return head[0] == "["

