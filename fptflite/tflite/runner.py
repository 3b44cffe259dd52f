"""Running a .tflite with the LiteRT interpreter as an evaluation predictor."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fptflite.tflite.litert import dequantize, load_interpreter


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
    whole batches (the batch dimension is resized as needed) on ``num_threads`` CPU threads
    with XNNPACK. ``preserve_all_tensors`` keeps the intermediate tensors of the last call
    readable through ``interpreter.get_tensor``.

    Raises:
        ValueError: the file is not a usable .tflite, or its input size differs from the
            preprocessing's ``input_size``.
    """

    def __init__(self, path: str, input_size: Sequence[int] | None = None,
                 num_threads: int | None = None, preserve_all_tensors: bool = False):
        self.path = path
        self.interpreter = load_interpreter(path, num_threads=num_threads,
                                            preserve_all_tensors=preserve_all_tensors)
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1 or len(inp[0]["shape"]) != 4 \
                or inp[0]["shape"][3] != 3:
            raise ValueError(f"{path} is not a pose model: expected one [1, H, W, 3] input and "
                             "one heatmap output")
        self._in, self._out = inp[0], out[0]
        self.input_size = (int(inp[0]["shape"][1]), int(inp[0]["shape"][2]))
        if input_size is not None and tuple(input_size) != self.input_size:
            raise ValueError(
                f"{path} takes {self.input_size[0]}x{self.input_size[1]} inputs but the "
                f"preprocessing produces {input_size[0]}x{input_size[1]} crops")
        self._batch = int(inp[0]["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._in["index"],
                                                 [batch, *self.input_size, 3])
            self.interpreter.allocate_tensors()
            self._in = self.interpreter.get_input_details()[0]
            self._out = self.interpreter.get_output_details()[0]
            self._batch = batch

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero = self._in["quantization"]
        info = np.iinfo(dtype)
        return np.clip(round_half_away_from_zero(images / scale + zero), info.min,
                       info.max).astype(dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        """The file's output [B, h, w, K] as float32 heatmaps (a float output is only cast)."""
        return dequantize(raw, *self._out["quantization"])

    def __call__(self, images: np.ndarray, indices=None) -> np.ndarray:
        self._resize(len(images))
        self.interpreter.set_tensor(self._in["index"], self.quantize_input(images))
        self.interpreter.invoke()
        return self.dequantize_output(self.interpreter.get_tensor(self._out["index"]))
