"""Pictures: predicted skeletons on images and the parity plot (PNG files)."""

from __future__ import annotations

import os

import cv2
import numpy as np

from fptflite.keypoints import COCO_KEYPOINT_NAMES, COCO_SKELETON
from fptflite.utils.io import atomic_path

_LEFT, _RIGHT, _MID = (255, 140, 0), (0, 160, 255), (60, 220, 60)  # RGB


def _color(i: int, j: int) -> tuple:
    names = COCO_KEYPOINT_NAMES[i] + COCO_KEYPOINT_NAMES[j]
    return _LEFT if "left" in names and "right" not in names else \
        _RIGHT if "right" in names and "left" not in names else _MID


def draw_skeleton(image_rgb: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                  threshold: float = 0.2, radius: int = 3) -> np.ndarray:
    """Draws one pose [K, 2] (image pixels) with scores [K] onto a copy of the image."""
    out = np.ascontiguousarray(image_rgb.copy())
    for a, b in COCO_SKELETON:
        i, j = a - 1, b - 1
        if scores[i] > threshold and scores[j] > threshold:
            cv2.line(out, tuple(int(v) for v in keypoints[i]),
                     tuple(int(v) for v in keypoints[j]), _color(i, j), 2, cv2.LINE_AA)
    for k, (x, y) in enumerate(keypoints):
        if scores[k] > threshold:
            cv2.circle(out, (int(x), int(y)), radius, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def save_png(path: str, image_rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")


def skeleton_grid(instances, coords: np.ndarray, scores: np.ndarray, path: str,
                  max_images: int = 6, tile: int = 320) -> str:
    """One tile per image (up to ``max_images``) with every predicted pose drawn."""
    by_image: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        by_image.setdefault(inst.image_path, []).append(i)
    tiles = []
    for image_path, idx in list(by_image.items())[:max_images]:
        img = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
        for i in idx:
            img = draw_skeleton(img, coords[i], scores[i])
        s = tile / max(img.shape[:2])
        img = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)))
        canvas = np.zeros((tile, tile, 3), np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        tiles.append(canvas)
    cols = min(3, len(tiles))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)]
    save_png(path, np.vstack(rows))
    return path


def parity_plot(reports: dict[str, dict], path: str) -> str:
    """Bar chart of per-keypoint pixel error of each candidate vs the float model."""
    # lazy: matplotlib (and its Agg backend choice) only when a picture is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use, as pyplot requires

    names = list(next(iter(reports.values()))["per_keypoint_error_px"])  # COCO's or MPII's
    fig, ax = plt.subplots(figsize=(11, 4.2))
    width = 0.8 / max(len(reports), 1)
    for n, (label, rep) in enumerate(reports.items()):
        vals = [rep["per_keypoint_error_px"][k] for k in names]
        ax.bar(np.arange(len(names)) + n * width, vals, width,
               label=f"{label} ({rep.get('metric', 'AP')} {100 * rep['candidate_score']:.1f} "
                     "vs float "
                     f"{100 * rep['reference_score']:.1f})")
    ax.set_xticks(np.arange(len(names)) + width * (len(reports) - 1) / 2)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylabel("mean |TFLite - float| (crop px)")
    ax.set_title("Per-keypoint disagreement with the float model, same crops")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
