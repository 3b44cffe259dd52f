"""Single-person frames and videos rendered with the synthetic dataset's figure renderer.

For prediction tests and benchmarks: one figure (fixed pose and clothes) on a fixed textured
background, static or moving along a smooth path, with its ground-truth keypoints.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from fptflite.data import synthetic
from fptflite.utils.io import atomic_path


def render_figure(background: np.ndarray, keypoints: np.ndarray, height: float,
                  style_seed: int) -> np.ndarray:
    """One figure with keypoints [17, 2] drawn on a copy of ``background`` [H, W, 3] float.

    The same ``style_seed`` gives the same clothes and skin in every frame. Returns uint8 RGB.
    """
    img = background.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    synthetic._render_person(img, mask, keypoints, height, np.random.default_rng(style_seed))
    return np.clip(img, 0, 255).astype(np.uint8)


def figure_track(num_frames: int, size: tuple[int, int], seed: int = 0, moving: bool = True,
                 height_frac: float = 0.7, speed_px: float = 3.0) -> tuple[np.ndarray, float]:
    """Ground-truth keypoints [T, 17, 2] of one figure: static, or walking left-right and
    bobbing (a smooth path, at most ``speed_px`` pixels per frame), and its height in px."""
    h, w = size
    rng = np.random.default_rng(seed)
    height = height_frac * h
    center0 = np.array([w / 2, h / 2])
    pose = synthetic.sample_pose(rng, height, center0, rotation=0.0)
    t = np.arange(num_frames, dtype=np.float64)
    if moving:
        amp = 0.3 * w
        phase = t * speed_px / amp
        offsets = np.stack([amp * np.sin(phase), 0.04 * h * np.sin(3 * phase)], axis=1)
    else:
        offsets = np.zeros((num_frames, 2))
    return pose[None] + offsets[:, None, :], height


def frames(num_frames: int, size: tuple[int, int] = (480, 640), seed: int = 0,
           moving: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """Rendered RGB frames [H, W, 3] uint8 and their keypoints [T, 17, 2]."""
    kps, height = figure_track(num_frames, size, seed, moving)
    background = synthetic._background(np.random.default_rng([seed, 1]), *size)
    return [render_figure(background, k, height, seed) for k in kps], kps


def write_video(path: str, frames_rgb: list[np.ndarray], fps: float = 30.0) -> None:
    """Writes frames to an .mp4 (mp4v), .avi (MJPG) or .webm (VP8: what browsers play) file
    atomically."""
    fourcc = {".avi": "MJPG", ".webm": "VP80"}.get(os.path.splitext(path.lower())[1], "mp4v")
    h, w = frames_rgb[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"cannot write video {path}")
        for f in frames_rgb:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
