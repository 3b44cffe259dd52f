"""Running a .tflite on a runtime (LiteRT CPU by default) as an evaluation predictor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fptflite.tflite.litert import dequantize
from fptflite.tflite.runtimes import InterpreterSession, Session, open_session


def round_half_away_from_zero(values: np.ndarray) -> np.ndarray:
    """Rounds to the nearest integer, ties away from zero: TFLite's QUANTIZE (std::round) and,
    on non-negative values such as pixels, the QAT model's input fake-quant (floor(x + 0.5)).

    ``np.round`` rounds ties to even instead. Eval crops are bilinear warps, so some pixels are
    exact ties (x.5); rounding them differently from the Keras QAT model seeds differences
    that grow through every layer of a Keras-vs-file comparison.
    """
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


class TFLitePredictor:
    """Predictor ``(images [B, H, W, 3] float 0..255, indices) -> heatmaps [B, h, w, K]``.

    Quantizes the input and dequantizes the output with the file's own parameters, and runs
    whole batches on ``runtime`` (``fptflite.tflite.runtimes``: "cpu" = LiteRT with XNNPACK
    on ``num_threads`` threads, "cpu_reference", "gpu", "tflite2.14"). With the interpreter
    runtimes, ``preserve_all_tensors`` keeps the intermediate tensors of the last call
    readable through ``interpreter.get_tensor``.

    Raises:
        ValueError: the file is not a usable .tflite, or its input size differs from the
            preprocessing's ``input_size``.
        RuntimeUnavailable: the runtime cannot start here or cannot load the file.
    """

    def __init__(self, path: str, input_size: Sequence[int] | None = None,
                 num_threads: int | None = None, preserve_all_tensors: bool = False,
                 runtime: str = "cpu", session: Session | None = None):
        self.path, self.runtime = path, runtime
        if session is not None:  # a session of ``path`` opened by the caller
            self.session, self.runtime = session, session.runtime
        elif preserve_all_tensors:
            if runtime not in ("cpu", "cpu_reference"):
                raise ValueError(f"preserve_all_tensors needs an interpreter runtime, not "
                                 f"{runtime!r}")
            self.session = InterpreterSession(runtime, path, num_threads, True)
        else:
            self.session = open_session(runtime, path, num_threads)
        self._in, self._out = self.session.input, self.session.output
        if len(self._in.shape) != 4 or self._in.shape[3] != 3:
            raise ValueError(f"{path} is not a pose model: expected one [1, H, W, 3] input and "
                             "one heatmap output")
        self.input_size = (self._in.shape[1], self._in.shape[2])
        if input_size is not None and tuple(input_size) != self.input_size:
            raise ValueError(
                f"{path} takes {self.input_size[0]}x{self.input_size[1]} inputs but the "
                f"preprocessing produces {input_size[0]}x{input_size[1]} crops")

    @property
    def interpreter(self):
        """The LiteRT interpreter (the "cpu" and "cpu_reference" runtimes only)."""
        if not isinstance(self.session, InterpreterSession):
            raise AttributeError(f"the {self.runtime} runtime has no LiteRT interpreter")
        return self.session.interpreter

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self._in.dtype
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero = self._in.quantization
        info = np.iinfo(dtype)
        return np.clip(round_half_away_from_zero(images / scale + zero), info.min,
                       info.max).astype(dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        """The file's output [B, h, w, K] as float32 heatmaps (a float output is only cast)."""
        return dequantize(raw, *self._out.quantization)

    def __call__(self, images: np.ndarray, indices=None) -> np.ndarray:
        return self.dequantize_output(self.session.run(self.quantize_input(images)))
