"""Sharded TFRecords of per-person crops, for large datasets and multi-worker training.

Each record holds one person: a JPEG of the image region that any training augmentation can
reach (the padded box x (1 + scale_factor) x sqrt(2) for rotations, clipped to the image),
downscaled when the person is far larger than the network input needs, plus the crop centre,
size and keypoints mapped into that region. Decoding a region instead of a whole image is
what makes this faster than reading the original files (see benchmarks/input_pipeline.py).

Layout: ``DIR/train-00000-of-00016.tfrecord`` ... and ``DIR/index.json`` (record counts).
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Sequence

import cv2
import numpy as np
import tensorflow as tf

from fptflite.data.coco import DataError, PersonInstance
from fptflite.utils.io import atomic_path, write_json_atomic
from fptflite.utils.progress import ProgressCounter

INDEX_FILE = "index.json"
REACH = 1.35 * math.sqrt(2)  # max scale-up times the rotation's corner reach


def _feature_bytes(v: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _feature_floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(map(float, v))))


def _feature_ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(map(int, v))))


def person_region(inst: PersonInstance, input_size: Sequence[int]):
    """Cuts and encodes one person's reachable region.

    Returns:
        (jpeg bytes, center [2], size [2], keypoints [K, 3]) in region pixels.
    """
    img = cv2.imread(inst.image_path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"image {inst.image_path} (annotation {inst.ann_id}) cannot be decoded")
    h, w = img.shape[:2]
    half = inst.size * REACH / 2
    x0, y0 = (max(int(np.floor(c - r)), 0) for c, r in zip(inst.center, half, strict=True))
    x1 = min(int(np.ceil(inst.center[0] + half[0])) + 1, w)
    y1 = min(int(np.ceil(inst.center[1] + half[1])) + 1, h)
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = 0, 0, w, h
    region = img[y0:y1, x0:x1]
    # Keep at least the pixel density a 0.65x (scale-augmented) crop needs at the input size.
    f = min(1.0, input_size[1] / (0.65 * inst.size[0]))
    if f < 1.0:
        region = cv2.resize(region, (max(1, round(region.shape[1] * f)),
                                     max(1, round(region.shape[0] * f))),
                            interpolation=cv2.INTER_AREA)
        f_x, f_y = region.shape[1] / (x1 - x0), region.shape[0] / (y1 - y0)
    else:
        f_x = f_y = 1.0
    ok, buf = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise DataError(f"cannot encode a crop of {inst.image_path}")
    scale = np.array([f_x, f_y])
    # Pixel-centre mapping of a resize: x' = (x + 0.5) * f - 0.5.
    center = (inst.center - [x0, y0] + 0.5) * scale - 0.5
    kps = inst.keypoints.copy()
    labelled = kps[:, 2] > 0
    kps[labelled, :2] = (kps[labelled, :2] - [x0, y0] + 0.5) * scale - 0.5
    return buf.tobytes(), center, inst.size * scale, kps


def write_shards(instances: Sequence[PersonInstance], out_dir: str, prefix: str,
                 input_size: Sequence[int], num_shards: int, progress: bool = True) -> dict:
    """Writes ``num_shards`` TFRecord files (atomically) and the index. Returns the index."""
    os.makedirs(out_dir, exist_ok=True)
    num_shards = max(1, min(num_shards, len(instances)))
    counter = ProgressCounter(len(instances), f"writing {prefix} records", enabled=progress)
    counts = []
    for s in range(num_shards):
        path = os.path.join(out_dir, f"{prefix}-{s:05d}-of-{num_shards:05d}.tfrecord")
        n = 0
        with atomic_path(path) as tmp, tf.io.TFRecordWriter(tmp) as writer:
            for inst in instances[s::num_shards]:
                jpeg, center, size, kps = person_region(inst, input_size)
                ex = tf.train.Example(features=tf.train.Features(feature={
                    "image": _feature_bytes(jpeg),
                    "center": _feature_floats(center),
                    "size": _feature_floats(size),
                    "keypoints": _feature_floats(kps.reshape(-1)),
                    "ids": _feature_ints([inst.image_id, inst.ann_id]),
                }))
                writer.write(ex.SerializeToString())
                n += 1
                counter.update(1)
        counts.append(n)
    index = {"prefix": prefix, "input_size": list(input_size), "num_records": sum(counts),
             "shards": {f"{prefix}-{s:05d}-of-{num_shards:05d}.tfrecord": c
                        for s, c in enumerate(counts)}}
    write_json_atomic(os.path.join(out_dir, f"{prefix}_{INDEX_FILE}"), index)
    return index


def read_index(tfrecord_dir: str, prefix: str = "train") -> dict:
    path = os.path.join(tfrecord_dir, f"{prefix}_{INDEX_FILE}")
    if not os.path.isfile(path):
        raise DataError(f"TFRecord index not found: {path} (run python -m training."
                        "prepare_coco first)")
    with open(path) as f:
        index = json.load(f)
    missing = [n for n in index["shards"] if not os.path.isfile(os.path.join(tfrecord_dir, n))]
    if missing:
        raise DataError(f"{tfrecord_dir}: shards listed in the index are missing: {missing[:3]}")
    return index


def parse_record(serialized, num_keypoints: int, with_ids: bool = False):
    """One record -> (jpeg, center [2], size [2], keypoints [K, 3]) and, with ``with_ids``,
    ids [2] int64 (image id, annotation id)."""
    f = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "center": tf.io.FixedLenFeature([2], tf.float32),
        "size": tf.io.FixedLenFeature([2], tf.float32),
        "keypoints": tf.io.FixedLenFeature([num_keypoints * 3], tf.float32),
        "ids": tf.io.FixedLenFeature([2], tf.int64),
    })
    out = (f["image"], f["center"], f["size"], tf.reshape(f["keypoints"], [num_keypoints, 3]))
    return (*out, f["ids"]) if with_ids else out


def shard_files(tfrecord_dir: str, prefix: str = "train") -> list[str]:
    return sorted(glob.glob(os.path.join(tfrecord_dir, f"{prefix}-*.tfrecord")))
