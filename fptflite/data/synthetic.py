"""A synthetic COCO-format person keypoint dataset, generated deterministically from a seed.

Figures are articulated bodies rendered from a kinematic tree whose joints are the 17 COCO
keypoints: a head with eyes, nose and ears facing the camera, torso, arms and legs. The
person's left side (on the image's right for a frontal figure) wears a lighter shade than the
right side, as clothes and lighting make real people's sides distinguishable. Pose, scale,
rotation and position vary; several figures share an image and may overlap; random occluder
boxes hide joints (v = 1); figures cut by the image border lose those joints (v = 0, x = y
= 0); some tiny background figures carry no keypoints (num_keypoints = 0), as in COCO.
Backgrounds are textured. Detector-style boxes (jittered true boxes, misses, false positives,
scores) go to ``person_detections_val.json``. ``COMPLETE.json`` is written last: a set
without it is incomplete (generation was interrupted) and is generated again.

Usage: python -m fptflite.data.synthetic --out_dir=DIR --num_train=N --num_val=M --seed=S
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
from absl import app, flags

from fptflite.keypoints import COCO_KEYPOINT_NAMES, NUM_KEYPOINTS, PERSON_CATEGORY
from fptflite.utils import cli
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

IMAGE_SIZE = (240, 320)  # (H, W)
COMPLETION_MARKER = "COMPLETE.json"  # written after every other file of a generated set
(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI, L_HIP, R_HIP,
 L_KNE, R_KNE, L_ANK, R_ANK) = (COCO_KEYPOINT_NAMES.index(n) for n in (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"))


def _unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def sample_pose(rng: np.random.Generator, height: float, center: np.ndarray,
                rotation: float) -> np.ndarray:
    """Keypoints [17, 2] of a frontal figure about ``height`` pixels tall.

    Angles are in image coordinates (y down); 0 rad points right, pi/2 points down.
    """
    u = height / 8.0  # body unit: a figure is about 8 head-heights tall
    down = math.pi / 2 + rotation
    up = down - math.pi
    d_up, d_down = _unit(up), _unit(down)
    right_dir = _unit(rotation)  # image-right: the person's left side for a frontal figure
    pelvis = center + d_down * u * 0.4
    neck = pelvis + d_up * u * rng.uniform(2.6, 3.1)
    k = np.zeros((NUM_KEYPOINTS, 2))
    shoulder = u * rng.uniform(0.85, 1.05)
    hip = u * rng.uniform(0.5, 0.65)
    k[L_SHO], k[R_SHO] = neck + right_dir * shoulder, neck - right_dir * shoulder
    k[L_HIP], k[R_HIP] = pelvis + right_dir * hip, pelvis - right_dir * hip
    head = neck + d_up * u * rng.uniform(0.9, 1.1)
    yaw = rng.uniform(-0.35, 0.35) * u  # small head turn shifts the face sideways
    k[NOSE] = head + right_dir * yaw + d_down * u * 0.1
    k[L_EYE] = head + right_dir * (0.3 * u + yaw * 0.8) + d_up * u * 0.12
    k[R_EYE] = head - right_dir * (0.3 * u - yaw * 0.8) + d_up * u * 0.12
    k[L_EAR] = head + right_dir * (0.55 * u - yaw * 0.3)
    k[R_EAR] = head - right_dir * (0.55 * u + yaw * 0.3)
    for side, sho, elb, wri in ((1, L_SHO, L_ELB, L_WRI), (-1, R_SHO, R_ELB, R_WRI)):
        a1 = down - side * rng.uniform(-0.3, 2.6)  # upper arm: down, out to the side or up
        a2 = a1 - side * rng.uniform(-0.2, 2.2)
        k[elb] = k[sho] + _unit(a1) * u * rng.uniform(1.3, 1.6)
        k[wri] = k[elb] + _unit(a2) * u * rng.uniform(1.1, 1.4)
    for side, hp, kn, an in ((1, L_HIP, L_KNE, L_ANK), (-1, R_HIP, R_KNE, R_ANK)):
        a1 = down - side * rng.uniform(-0.15, 0.7)
        a2 = a1 + side * rng.uniform(-0.1, 1.2)
        k[kn] = k[hp] + _unit(a1) * u * rng.uniform(1.8, 2.1)
        k[an] = k[kn] + _unit(a2) * u * rng.uniform(1.7, 2.0)
    return k


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    low = rng.uniform(40, 215, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, rng.uniform(3, 14), (h, w, 3)).astype(np.float32)
    for _ in range(rng.integers(3, 9)):  # clutter: stripes and boxes
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.uniform() < 0.5:
            cv2.line(img, p1, p2, color, int(rng.integers(1, 6)))
        else:
            cv2.rectangle(img, p1, p2, color, -1 if rng.uniform() < 0.3 else 2)
    return img


def _shade(color: np.ndarray, factor: float) -> tuple:
    return tuple(float(c) for c in np.clip(color * factor, 0, 255))


def _render_person(img: np.ndarray, mask: np.ndarray, k: np.ndarray, height: float,
                   rng: np.random.Generator) -> None:
    """Draws one figure into ``img`` and its silhouette into ``mask``."""
    u = height / 8.0
    cloth = rng.uniform(30, 230, 3)
    pants = rng.uniform(20, 200, 3)
    skin = np.array([rng.uniform(120, 240), rng.uniform(90, 190), rng.uniform(70, 160)])
    limb = max(2, int(round(u * 0.45)))

    def pt(i):
        return tuple(int(round(v * 16)) for v in k[i])  # 4 fractional bits

    def line(a, b, color, width):
        for target, c in ((img, color), (mask, (255,))):
            cv2.line(target, pt(a), pt(b), c, width, cv2.LINE_AA, shift=4)

    torso = np.array([k[L_SHO], k[L_HIP], k[R_HIP], k[R_SHO]]) * 16
    for target, c in ((img, _shade(cloth, 1.0)), (mask, (255,))):
        cv2.fillConvexPoly(target, torso.round().astype(np.int32), c, cv2.LINE_AA, shift=4)
    # Left limbs lighter, right limbs darker: the two sides are distinguishable.
    for (a, b), color in (((L_HIP, L_KNE), pants * 1.25), ((L_KNE, L_ANK), pants * 1.25),
                          ((R_HIP, R_KNE), pants * 0.7), ((R_KNE, R_ANK), pants * 0.7),
                          ((L_SHO, L_ELB), cloth * 1.3), ((R_SHO, R_ELB), cloth * 0.65)):
        line(a, b, _shade(color, 1.0), limb)
    line(L_ELB, L_WRI, _shade(skin, 1.1), max(2, limb - 1))
    line(R_ELB, R_WRI, _shade(skin, 0.8), max(2, limb - 1))
    neck = (k[L_SHO] + k[R_SHO]) / 2
    head_c = (k[L_EAR] + k[R_EAR]) / 2
    for target, c in ((img, _shade(skin, 1.0)), (mask, (255,))):
        cv2.line(target, tuple(int(v) for v in neck), tuple(int(v) for v in head_c), c,
                 max(2, limb - 1))
        cv2.circle(target, tuple(int(round(v * 16)) for v in head_c), int(round(u * 0.62 * 16)),
                   c, -1, cv2.LINE_AA, shift=4)
    r = max(1, int(round(u * 0.1 * 16)))
    cv2.circle(img, pt(L_EAR), r * 2, _shade(skin, 1.15), -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, pt(R_EAR), r * 2, _shade(skin, 0.75), -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, pt(L_EYE), r, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, pt(R_EYE), r, (20, 20, 20), -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, pt(NOSE), r, (200, 40, 40), -1, cv2.LINE_AA, shift=4)
    for j in (L_WRI, R_WRI, L_ANK, R_ANK):  # hands and feet
        cv2.circle(img, pt(j), int(limb * 0.8 * 16), _shade(skin if j in (L_WRI, R_WRI)
                   else pants * 0.4, 1.0), -1, cv2.LINE_AA, shift=4)


def generate_image(rng: np.random.Generator, image_id: int, size=IMAGE_SIZE):
    """Renders one image. Returns (RGB uint8 image [H, W, 3], list of annotation dicts)."""
    h, w = size
    img = _background(rng, h, w)
    people = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3]))):
        height = rng.uniform(0.45, 0.95) * h
        center = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.3, 0.7) * h])
        rotation = rng.normal(0, 0.35) if rng.uniform() < 0.8 else rng.uniform(-1.2, 1.2)
        people.append((height, sample_pose(rng, height, center, rotation), True))
    if rng.uniform() < 0.15:  # a tiny unlabelled person in the background
        height = rng.uniform(0.08, 0.14) * h
        center = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.1, 0.9) * h])
        people.insert(0, (height, sample_pose(rng, height, center, 0.0), False))
    masks = []
    for height, k, _ in people:
        m = np.zeros((h, w), np.uint8)
        _render_person(img, m, k, height, rng)
        masks.append(m)
    occluders = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(0, 3)):
        ow, oh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.1, 0.3) * h
        x0, y0 = rng.uniform(0, w - ow), rng.uniform(0, h - oh)
        p1, p2 = (int(x0), int(y0)), (int(x0 + ow), int(y0 + oh))
        cv2.rectangle(img, p1, p2, tuple(float(c) for c in rng.uniform(0, 255, 3)), -1)
        cv2.rectangle(occluders, p1, p2, 255, -1)
    anns = []
    for i, (_, k, labelled) in enumerate(people):
        covered = occluders.copy()
        for m in masks[i + 1:]:
            covered |= m
        visible_mask = masks[i] & ~covered
        ys, xs = np.nonzero(masks[i])
        if len(xs) == 0:
            continue
        kps = np.zeros((NUM_KEYPOINTS, 3))
        if labelled:
            for j, (x, y) in enumerate(k):
                if 0 <= x <= w - 1 and 0 <= y <= h - 1:
                    v = 1 if covered[int(round(y)), int(round(x))] else 2
                    kps[j] = (round(float(x), 2), round(float(y), 2), v)
        if labelled and (kps[:, 2] > 0).sum() == 0:
            continue
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        anns.append({
            "image_id": image_id,
            "category_id": 1,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(max(int((visible_mask > 0).sum()), 1)),
            "iscrowd": 0,
            "keypoints": [float(v) if j % 3 < 2 else int(v) for j, v in
                          enumerate(kps.reshape(-1).tolist())],
            "num_keypoints": int((kps[:, 2] > 0).sum()),
        })
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _detections(rng: np.random.Generator, images: list, anns: list) -> list[dict]:
    dets = []
    for a in anns:
        if rng.uniform() < 0.05:  # a miss
            continue
        x, y, bw, bh = a["bbox"]
        jit = rng.normal(0, 0.06, 4) * [bw, bh, bw, bh]
        box = [x + jit[0], y + jit[1], max(bw + jit[2], 4.0), max(bh + jit[3], 4.0)]
        dets.append({"image_id": a["image_id"], "category_id": 1,
                     "bbox": [round(float(v), 2) for v in box],
                     "score": round(float(rng.uniform(0.6, 1.0)), 4)})
    for im in images:
        for _ in range(rng.integers(0, 3)):
            bw, bh = rng.uniform(10, im["width"] / 2), rng.uniform(20, im["height"] / 1.5)
            box = [rng.uniform(0, im["width"] - bw), rng.uniform(0, im["height"] - bh), bw, bh]
            dets.append({"image_id": im["id"], "category_id": 1,
                         "bbox": [round(float(v), 2) for v in box],
                         "score": round(float(rng.uniform(0.02, 0.5)), 4)})
    return dets


def generate_split(out_dir: str, split: str, num_images: int, seed: int,
                   first_image_id: int, progress: bool = True) -> dict:
    """Writes ``num_images`` JPEGs under ``out_dir/images/<split>`` and returns the COCO dict."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    image_dir = os.path.join(out_dir, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        image_id = first_image_id + i
        img, image_anns = generate_image(rng, image_id)
        file_name = f"{image_id:012d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        write_bytes_atomic(os.path.join(image_dir, file_name), buf.tobytes())
        images.append({"id": image_id, "file_name": file_name, "height": img.shape[0],
                       "width": img.shape[1]})
        for a in image_anns:
            a["id"] = len(anns) + first_image_id * 10
            anns.append(a)
        if progress and (i + 1) % 100 == 0:
            print(f"  {split}: {i + 1}/{num_images} images", flush=True)
    return {
        "info": {"description": f"fptflite synthetic persons ({split}, seed {seed})"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [dict(PERSON_CATEGORY)],
    }


def dataset_paths(out_dir: str) -> dict[str, str]:
    """Where ``generate_dataset`` writes (the ``synthetic`` data layout)."""
    return {
        "train_ann": os.path.join(out_dir, "annotations", "person_keypoints_train.json"),
        "val_ann": os.path.join(out_dir, "annotations", "person_keypoints_val.json"),
        "train_images": os.path.join(out_dir, "images", "train"),
        "val_images": os.path.join(out_dir, "images", "val"),
        "val_det": os.path.join(out_dir, "person_detections_val.json"),
    }


def generate_dataset(out_dir: str, num_train: int, num_val: int, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Generates the whole dataset; returns the paths a training/eval run needs."""
    train = generate_split(out_dir, "train", num_train, seed, 1, progress)
    val = generate_split(out_dir, "val", num_val, seed, 1_000_001, progress)
    paths = dataset_paths(out_dir)
    write_json_atomic(paths["train_ann"], train, indent=None)
    write_json_atomic(paths["val_ann"], val, indent=None)
    dets = _detections(np.random.default_rng([seed, 2]), val["images"], val["annotations"])
    write_json_atomic(paths["val_det"], dets, indent=None)
    # Last: a run killed before this line leaves no marker, and the set is generated again.
    write_json_atomic(os.path.join(out_dir, COMPLETION_MARKER),
                      {"num_train": num_train, "num_val": num_val, "seed": seed})
    return paths


def is_complete(out_dir: str) -> bool:
    """True once ``generate_dataset`` has written every file of ``out_dir`` (its marker)."""
    return os.path.isfile(os.path.join(out_dir, COMPLETION_MARKER))


def run_cli(generate: Callable[[str, int, int, int], dict]) -> None:
    """The command line of a synthetic generator: ``--out_dir --num_train --num_val --seed``."""
    out_dir = cli.flag("out_dir", required=True)
    num_train = flags.DEFINE_integer("num_train", 1200, "Training images.")
    num_val = flags.DEFINE_integer("num_val", 150, "Validation images.")
    seed = cli.flag("seed", help_note="Same seed, same files.")

    def main(argv):
        del argv
        paths = generate(out_dir.value, num_train.value, num_val.value, seed.value)
        for k, v in paths.items():
            print(f"{k:>12}: {v}")

    app.run(main)


if __name__ == "__main__":
    run_cli(generate_dataset)
