"""Where a Keras model and its .tflite file part ways, layer by layer, on the same crops.

The heatmap-level fidelity figures say how far the file is from the Keras QAT model; this says
where the difference starts and how it grows. The two readings differ in kind:

* a simulation that mismatches the converter at one layer (a wrong range, rounding rule or
  bias) shows up as a jump at that layer, from identical outputs before it to a large
  fraction of differing values at it;
* exact agreement up to float32 rounding shows up as identical early layers, a first layer
  where a few values in 10^4 differ by one step (rounding near-ties: the file sums in int32,
  Keras in float32), and a fraction that then grows layer after layer as each differing
  value moves the next layer's sums.

Measured on a demo model (8 GT crops): the input and the image normalization are
identical, 0.03% of Conv1's outputs differ, 3% by block 1's projection, and from block 4 on
30-54% of the values differ by a step or more: a deep int8 network can turn float32 rounding
into whole steps and pass them on, so no float32 execution of the simulation (XLA's
included) reproduces the file bit for bit. How fast the fraction grows depends on the
trained weights: another demo run's model stays identical for 5 layers and peaks at 15%.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

from fptflite.tflite import litert
from fptflite.tflite.runner import TFLitePredictor

DEFAULT_NUM_DIVERGENCE_CROPS = 8


def matched_tensors(model: keras.Model, interpreter: Interpreter,
                    batch: int) -> list[tuple[str, int, float, int]]:
    """(Keras layer name, file tensor index, scale, zero point) of every single-use layer
    whose output the file holds as a quantized 8-bit tensor of the same shape, in the Keras
    model's layer order.

    The tensors are found by the layer names the converter writes into tensor names
    (``litert.quantized_layer_outputs``): "model/quant_block_2_add/add" or
    "model/quant_Conv1_relu/Relu6;..." for a fused conv, BN and ReLU.

    Args:
        model: the Keras model the file was converted from.
        interpreter: an interpreter of the file, run on ``batch`` crops.
        batch: the batch size the interpreter's tensors have.
    """
    shapes = {layer.name: [batch, *layer.output_shape[1:]] for layer in model.layers
              if len(layer.inbound_nodes) == 1}
    found = litert.quantized_layer_outputs(interpreter, shapes)
    return [(layer.name, *found[layer.name]) for layer in model.layers if layer.name in found]


def layer_divergence(model: keras.Model, tflite_path: str, crops: np.ndarray,
                     num_threads: int | None = None) -> list[dict]:
    """Compares every layer output the Keras model and the file share, on the file's grid.

    Args:
        model: the Keras model the file was converted from (for an int8_qat file, the QAT
            model, whose quantized layers' outputs lie on the file's int8 grids).
        tflite_path: the int8 .tflite file.
        crops: crops [N, H, W, 3] in pixels (a few: the file keeps every tensor).
        num_threads: LiteRT CPU threads.

    Returns:
        One dict per shared layer, in model order: {"layer", "differing_fraction" (values
        whose difference rounds to at least one step of the file's scale), "rms_steps",
        "max_steps"}. Empty when no layer output could be matched (a float file).

    Raises:
        ValueError: no crops.
    """
    if len(crops) == 0:
        raise ValueError("the layer divergence needs at least one crop")
    predictor = TFLitePredictor(tflite_path, None, num_threads, preserve_all_tensors=True)
    predictor(crops)
    interpreter = predictor.interpreter
    pairs = matched_tensors(model, interpreter, len(crops))
    if not pairs:
        return []
    probe = keras.Model(model.input, [model.get_layer(pair[0]).output for pair in pairs])
    keras_outs = probe(crops, training=False)
    keras_outs = keras_outs if isinstance(keras_outs, list) else [keras_outs]
    rows = []
    for (name, index, scale, zero), keras_out in zip(pairs, keras_outs, strict=True):
        file_out = litert.dequantize(interpreter.get_tensor(index), scale, zero, np.float64)
        steps = np.rint((file_out - np.asarray(keras_out, np.float64)) / scale)
        rows.append({"layer": name, "differing_fraction": float(np.mean(steps != 0)),
                     "rms_steps": float(np.sqrt(np.mean(steps**2))),
                     "max_steps": float(np.abs(steps).max())})
    return rows


def summarize_divergence(rows: list[dict]) -> str:
    """One line: identical prefix, first differing layer, first layer at >= 1%, the largest
    fraction and the last layer's."""
    if not rows:
        return "no layer output of the file matched a Keras layer"
    names = [r["layer"] for r in rows]
    first = next((i for i, r in enumerate(rows) if r["differing_fraction"] > 0), None)
    if first is None:
        return f"all {len(rows)} shared layer outputs identical"
    one = next((i for i, r in enumerate(rows) if r["differing_fraction"] >= 0.01), None)
    worst = max(range(len(rows)), key=lambda i: rows[i]["differing_fraction"])
    text = (f"{len(rows)} shared layer outputs, the first {first} identical; first differences "
            f"at {names[first]} ({rows[first]['differing_fraction']:.2%})")
    if one is not None:
        text += f", >= 1% from {names[one]} (layer {one + 1})"
    return (text + f", at most {rows[worst]['differing_fraction']:.1%} ({names[worst]}), "
            f"last {rows[-1]['differing_fraction']:.1%} ({names[-1]})")
