"""A synthetic MPII-format dataset from the synthetic COCO generator's figures.

The figures, backgrounds and occluders are ``fptflite.data.synthetic``'s; the 16 MPII joints
are mapped from its 17-keypoint kinematic tree: limbs joint for joint, pelvis and thorax as
the hip and shoulder midpoints, head top and upper neck at the top and bottom of the drawn head
circle (centre = mid-ears, radius 0.62 body units, a body unit being the ear distance / 1.1),
and the head box as the box around that circle. As in MPII, occluded joints are annotated
(``joints_vis`` 1); joints outside the image are not (0, written as [-1, -1]). Coordinates are
written MATLAB-style 1-based, like the real files, and ``center``/``scale`` are chosen so that
the reader's SimpleBaseline/HRNet box (centre + 15 * scale down, side 200 * scale) frames the
figure.

Usage: python -m fptflite.data.synthetic_mpii --out_dir=DIR --num_train=N --num_val=M --seed=S
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from fptflite.data import synthetic
from fptflite.data.mpii import CENTER_SHIFT, SCALE_PIXELS
from fptflite.keypoints import COCO_KEYPOINT_NAMES, MPII_KEYPOINT_NAMES
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

HEAD_RADIUS = 0.62  # body units, as synthetic._render_person draws the head
EAR_DISTANCE = 1.1  # body units between the ears (synthetic.sample_pose)
BOX_MARGIN = 1.05  # scale = 1.05 x the larger side of the joints' box / 200


def coco_to_mpii(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps a synthetic figure's COCO keypoints [17, 2] to MPII joints.

    Returns:
        (joints [16, 2], head box [2, 2] ((x1, y1), (x2, y2))), 0-based pixels.
    """
    coco = {n: k[i] for i, n in enumerate(COCO_KEYPOINT_NAMES)}
    ears = coco["left_ear"] - coco["right_ear"]
    unit = np.linalg.norm(ears) / EAR_DISTANCE
    right = ears / max(np.linalg.norm(ears), 1e-9)
    up = np.array([right[1], -right[0]])  # image y points down
    head = (coco["left_ear"] + coco["right_ear"]) / 2
    r = HEAD_RADIUS * unit
    named = {
        "pelvis": (coco["left_hip"] + coco["right_hip"]) / 2,
        "thorax": (coco["left_shoulder"] + coco["right_shoulder"]) / 2,
        "upper_neck": head - up * r,
        "head_top": head + up * r,
    }
    joints = np.stack([named[n] if n in named else coco[n] for n in MPII_KEYPOINT_NAMES])
    return joints, np.stack([head - r, head + r])


def mpii_record(name: str, joints: np.ndarray, head_box: np.ndarray,
                image_hw: tuple[int, int]) -> dict:
    """One MPII JSON record (1-based coordinates) for 0-based ``joints`` [16, 2]."""
    h, w = image_hw
    inside = (joints[:, 0] >= 0) & (joints[:, 0] <= w - 1) & (joints[:, 1] >= 0) & (
        joints[:, 1] <= h - 1)
    lo, hi = joints.min(0), joints.max(0)
    scale = BOX_MARGIN * float(max(hi - lo)) / SCALE_PIXELS
    center = (lo + hi) / 2 - [0.0, CENTER_SHIFT * scale]
    return {
        "image": name,
        "center": [round(float(v) + 1, 2) for v in center],
        "scale": round(scale, 6),
        "joints": [[round(float(x) + 1, 2), round(float(y) + 1, 2)] if v else [-1.0, -1.0]
                   for (x, y), v in zip(joints, inside, strict=True)],
        "joints_vis": [int(v) for v in inside],
        "head_box": [round(float(v) + 1, 2) for v in head_box.reshape(-1)],
    }


def generate_image(rng: np.random.Generator, name: str, size=synthetic.IMAGE_SIZE
                   ) -> tuple[np.ndarray, list[dict]]:
    """Renders one image of 1 or 2 figures. Returns (RGB uint8 [H, W, 3], MPII records)."""
    h, w = size
    img = synthetic._background(rng, h, w)
    records = []
    for _ in range(int(rng.choice([1, 1, 2]))):
        height = rng.uniform(0.5, 0.95) * h
        center = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.35, 0.65) * h])
        rotation = rng.normal(0, 0.35) if rng.uniform() < 0.8 else rng.uniform(-1.2, 1.2)
        k = synthetic.sample_pose(rng, height, center, rotation)
        synthetic._render_person(img, np.zeros((h, w), np.uint8), k, height, rng)
        joints, head_box = coco_to_mpii(k)
        rec = mpii_record(name, joints, head_box, (h, w))
        if sum(rec["joints_vis"]) >= 4:
            records.append(rec)
    for _ in range(rng.integers(0, 3)):  # occluders: joints behind them stay annotated
        ow, oh = rng.uniform(0.08, 0.2) * w, rng.uniform(0.08, 0.2) * h
        x0, y0 = rng.uniform(0, w - ow), rng.uniform(0, h - oh)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + ow), int(y0 + oh)),
                      tuple(float(c) for c in rng.uniform(0, 255, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8), records


def generate_split(out_dir: str, split: str, num_images: int, seed: int) -> list[dict]:
    """Writes ``num_images`` JPEGs under ``out_dir/images/<split>``; returns the records."""
    rng = np.random.default_rng([seed, 10 if split == "train" else 11])
    image_dir = os.path.join(out_dir, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    records = []
    for i in range(num_images):
        name = f"{i:09d}.jpg"
        img, recs = generate_image(rng, name)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        write_bytes_atomic(os.path.join(image_dir, name), buf.tobytes())
        records.extend(recs)
    return records


def dataset_paths(out_dir: str) -> dict[str, str]:
    """Where ``generate_dataset`` writes (the ``synthetic_mpii`` data layout)."""
    return {
        "train_ann": os.path.join(out_dir, "annotations", "mpii_train.json"),
        "val_ann": os.path.join(out_dir, "annotations", "mpii_val.json"),
        "train_images": os.path.join(out_dir, "images", "train"),
        "val_images": os.path.join(out_dir, "images", "val"),
    }


def generate_dataset(out_dir: str, num_train: int, num_val: int, seed: int = 0
                     ) -> dict[str, str]:
    """Generates train and val splits; returns their paths (the val file is written last)."""
    paths = dataset_paths(out_dir)
    train = generate_split(out_dir, "train", num_train, seed)
    write_json_atomic(paths["train_ann"], train, indent=None)
    val = generate_split(out_dir, "val", num_val, seed)
    write_json_atomic(paths["val_ann"], val, indent=None)
    return paths


if __name__ == "__main__":
    synthetic.run_cli(generate_dataset)
