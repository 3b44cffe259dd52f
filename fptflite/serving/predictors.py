"""Single-crop keypoint predictors for a .tflite (drop-in or heatmap output) or a Keras file.

Every predictor maps one crop [H, W, 3] uint8 RGB to keypoints [K, 2] (x, y) in crop pixels
(pixel centres at integers) and scores [K]. The .tflite predictors use LiteRT and numpy only:
importing this module does not import TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from fptflite import rundir
from fptflite.codec import HEATMAP_STRIDE, decode_heatmaps, heatmap_to_crop
from fptflite.keypoints import NUM_KEYPOINTS
from fptflite.tflite import runtimes
from fptflite.tflite.runner import TFLitePredictor


class DropInPredictor:
    """A drop-in file: uint8 [1, S, S, 3] -> float32 [1, 1, K, 3] (y, x, score) in [0, 1]."""

    def __init__(self, path: str, session: runtimes.Session):
        self.path, self.session = path, session
        self.input_size = session.input.shape[1:3]

    def __call__(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run(crop[None].astype(np.uint8)).reshape(-1, 3)
        h, w = self.input_size
        xy = np.stack([out[:, 1] * w - 0.5, out[:, 0] * h - 0.5], axis=1)
        return xy.astype(np.float64), out[:, 2].astype(np.float32)


class HeatmapPredictor:
    """Heatmaps [1, H/4, W/4, K] from a .tflite or a Keras model, decoded with DARK."""

    def __init__(self, heatmap_fn, input_size: tuple[int, int], decode: str = "dark"):
        self._fn, self.input_size, self.decode = heatmap_fn, input_size, decode

    def __call__(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hm = self._fn(crop[None].astype(np.float32))
        coords, scores = decode_heatmaps(np.asarray(hm), self.decode)
        return heatmap_to_crop(coords[0], HEATMAP_STRIDE), scores[0]


def _tflite_predictor(path: str, num_threads: int | None, runtime: str):
    session = runtimes.open_session(runtime, path, num_threads)
    in_shape, out_shape = list(session.input.shape), list(session.output.shape)
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise ValueError(f"{path} is not a pose model: expected one [1, H, W, 3] image input, "
                         f"got {in_shape}")
    if out_shape == [1, 1, NUM_KEYPOINTS, 3]:
        return DropInPredictor(path, session)
    if len(out_shape) == 4 and out_shape[3] == NUM_KEYPOINTS and \
            out_shape[1] * HEATMAP_STRIDE == in_shape[1] and \
            out_shape[2] * HEATMAP_STRIDE == in_shape[2]:
        runner = TFLitePredictor(path, session=session)
        return HeatmapPredictor(runner, runner.input_size)
    raise ValueError(
        f"{path} is not a pose model: expected output [1, 1, {NUM_KEYPOINTS}, 3] (keypoints) "
        f"or [1, {in_shape[1] // HEATMAP_STRIDE}, {in_shape[2] // HEATMAP_STRIDE}, "
        f"{NUM_KEYPOINTS}] (heatmaps), got {out_shape}")


def _keras_predictor(path: str) -> HeatmapPredictor:
    # Imported here: it imports TensorFlow, which the .tflite predictors must not load.
    from fptflite.quantization.model_io import load_model

    model = load_model(path)
    h, w = (int(d) for d in model.input_shape[1:3])

    def heatmaps(images):
        return model(images, training=False).numpy()

    return HeatmapPredictor(heatmaps, (h, w))


def load_predictor(path: str, num_threads: int | None = None, runtime: str = "cpu"
                   ) -> DropInPredictor | HeatmapPredictor:
    """A predictor for a .tflite file or a .keras/.h5 model file.

    Args:
        path: a .tflite file (LiteRT; TensorFlow is not imported), a .keras/.h5 file, or a run
            directory (its best export, found without TensorFlow).
        num_threads: LiteRT CPU threads (.tflite only).
        runtime: where a .tflite runs (``fptflite.tflite.runtimes.RUNTIMES``).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a directory that is not a finished run (``RunDirError``), an unknown
            extension, or a file that is not a usable pose model (naming the file and the
            problem).
        RuntimeUnavailable: the runtime cannot start here or cannot load the file.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model not found: {path}")
    path = rundir.resolve_model(path)
    if path.endswith(".tflite"):
        return _tflite_predictor(path, num_threads, runtime)
    if path.endswith((".keras", ".h5")):
        return _keras_predictor(path)
    raise ValueError(f"{path}: unknown model file type: expected .tflite, .keras or .h5")
