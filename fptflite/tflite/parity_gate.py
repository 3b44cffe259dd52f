"""Enforced float-vs-TFLite parity: a score drop budget, and checks that the pair is comparable.

The score is the dataset's metric (COCO AP or MPII mean PCKh, in [0, 1]) and the budget is in
its points (x 100): a file passes when ``float score - file score <= max_drop``. A negative
budget demands a gain.
"""

from __future__ import annotations

import tf_keras as keras

from fptflite import quantization
from fptflite.quantization.model_io import load_model
from fptflite.rundir import RunDirError
from fptflite.tflite.litert import load_interpreter

DEFAULT_MAX_DROP_POINTS = 0.5


class ParityError(RuntimeError):
    """A .tflite lost more AP against its float model than the budget allows."""


def drop_points(reference_score: float, candidate_score: float) -> float:
    """AP points the candidate loses against the reference (negative: it gains)."""
    return 100.0 * (reference_score - candidate_score)


def check_drop(reference_score: float, candidate_score: float, max_drop: float,
                  candidate: str, reference: str = "the float model",
                  metric: str = "AP") -> str:
    """Checks one file's AP against its reference.

    Args:
        reference_score, candidate_score: COCO AP (or MPII mean PCKh) in [0, 1].
        max_drop: the budget in points (x100).
        candidate, reference: names for the message (file paths).
        metric: the metric's name for the message ("AP" or "PCKh").

    Returns:
        A one-line verdict naming both APs.

    Raises:
        ParityError: the candidate loses more than ``max_drop`` points; the message names
            both models and both APs.
    """
    drop = drop_points(reference_score, candidate_score)
    line = (f"{candidate}: {metric} {100 * candidate_score:.2f} vs {100 * reference_score:.2f} for "
            f"{reference} (drop {drop:+.2f} points, budget {max_drop:.2f})")
    if drop > max_drop + 1e-9:
        raise ParityError(f"parity FAILED: {line}")
    return f"parity ok: {line}"


def load_float_reference(path: str) -> keras.Model:
    """Loads the float model a .tflite is compared with.

    Raises:
        RunDirError: naming ``path`` when it is a QAT model (compare against the float model
            it was fine-tuned from, not its fake-quant simulation).
    """
    model = load_model(path)
    if quantization.is_quantized(model):
        raise RunDirError(f"{path} is a QAT model (fake-quant wrappers); parity is measured "
                         "against the float model: give the float run's best.keras")
    return model


def check_compatible(tflite_path: str, model: keras.Model, model_path: str) -> None:
    """Checks that a .tflite and a Keras model take the same input and predict the same K.

    Raises:
        RunDirError: naming both files and the mismatch (input size or keypoint count).
    """
    interp = load_interpreter(tflite_path, delegates=False)
    inp = [int(d) for d in interp.get_input_details()[0]["shape"]]
    out = [int(d) for d in interp.get_output_details()[0]["shape"]]
    want_in = [int(d) for d in model.input_shape[1:]]
    want_out = [int(d) for d in model.output_shape[1:]]
    if inp[1:] != want_in:
        raise RunDirError(f"{tflite_path} takes {inp[1]}x{inp[2]}x{inp[3]} inputs but "
                         f"{model_path} takes {'x'.join(map(str, want_in))}: not the same model")
    if out[-1] != want_out[-1]:
        raise RunDirError(f"{tflite_path} predicts {out[-1]} keypoints but {model_path} "
                         f"predicts {want_out[-1]}: not the same model")
    if out[1:] != want_out:
        raise RunDirError(f"{tflite_path} outputs heatmaps {out[1:]} but {model_path} outputs "
                         f"{want_out}: not the same model")
