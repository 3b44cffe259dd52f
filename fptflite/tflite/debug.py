"""Per-layer quantization report with TFLite's QuantizationDebugger, and mixed int8/float files.

The debugger converts the float model with full-integer PTQ (calibrated on eval crops),
instruments every quantized tensor with a NumericVerify op and, on the same crops, compares
each int8 layer output with the float output computed from the same (dequantized) int8 input.
A layer's error is therefore its own, not accumulated from the layers before it.

``RMSE / scale`` is the root-mean-square error in units of the tensor's quantization step:
~0.29 is pure rounding (a uniform error over one step); well above 1 means the layer's range
or its weights quantize badly. Keeping the worst layers in float (the debugger's denylist)
trades a little latency for accuracy when a model collapses in int8.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from fptflite import quantization
from fptflite.tflite.convert import representative_dataset
from fptflite.utils.io import write_bytes_atomic

CSV_FIELDS = ("rank", "tensor_name", "op_name", "tensor_idx", "scale", "zero_point",
              "range_min", "range_max", "rmse_over_scale", "rmse", "mean_error",
              "max_abs_error", "max_abs_error_over_scale", "stddev", "num_elements")


def _converter(model: keras.Model, crops: np.ndarray) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(crops)
    return converter


def make_debugger(model: keras.Model, crops: np.ndarray, model_path: str = ""
                  ) -> tf.lite.experimental.QuantizationDebugger:
    """A QuantizationDebugger of the float ``model`` calibrated and run on ``crops``.

    Raises:
        ValueError: a QAT model (the debugger quantizes a float model itself), or an empty
            crop set; both name ``model_path``.
    """
    name = model_path or model.name
    if quantization.is_quantized(model):
        raise ValueError(f"{name} is a QAT model; the quantization debugger needs the float "
                         "model (it calibrates and quantizes it itself)")
    if len(crops) == 0:
        raise ValueError(f"the calibration set is empty: the debugger of {name} needs eval "
                         "crops")
    try:
        return tf.lite.experimental.QuantizationDebugger(
            converter=_converter(model, crops), debug_dataset=representative_dataset(crops))
    except ValueError as e:
        if "debug mode" not in str(e):
            raise
        # The debugger's own words when the quantized file has no NumericVerify op.
        raise ValueError(f"{name} has no quantizable layers: the debugger found no int8 "
                         f"layer output to compare ({e})") from e


def layer_stats(debugger, model_path: str = "") -> list[dict]:
    """Runs the debugger; one row per quantized layer output, worst (RMSE / scale) first.

    Returns:
        Rows with ``CSV_FIELDS``: the tensor and op, its scale and zero point, the float range
        its int8 values cover, RMSE, RMSE / scale, mean error, max |error| (and over scale),
        the float output's stddev and the element count.

    Raises:
        ValueError: the model has no quantized layer to report (names ``model_path``).
    """
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    buf.seek(0)
    rows = []
    for raw in csv.DictReader(buf):
        scale, zero = float(raw["scale"]), int(float(raw["zero_point"]))
        mse = float(raw["mean_squared_error"])
        rmse = math.sqrt(max(mse, 0.0))
        max_abs = float(raw["max_abs_error"])
        rows.append({
            "tensor_name": raw["tensor_name"], "op_name": raw["op_name"],
            "tensor_idx": int(float(raw["tensor_idx"])), "scale": scale, "zero_point": zero,
            "range_min": (-128 - zero) * scale, "range_max": (127 - zero) * scale,
            "rmse_over_scale": rmse / scale if scale > 0 else float("inf"), "rmse": rmse,
            "mean_error": float(raw["mean_error"]), "max_abs_error": max_abs,
            "max_abs_error_over_scale": max_abs / scale if scale > 0 else float("inf"),
            "stddev": float(raw["stddev"]), "num_elements": float(raw["num_elements"]),
        })
    if not rows:
        raise ValueError(f"{model_path or 'the model'} has no quantizable layers: the "
                         "debugger found no int8 layer output to compare")
    rows.sort(key=lambda r: -r["rmse_over_scale"])
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    return rows


def write_csv(rows: Sequence[dict], path: str) -> None:
    """``layer_stats`` rows as CSV (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r[k] for k in CSV_FIELDS})
    write_bytes_atomic(path, buf.getvalue().encode())


def plot_worst(rows: Sequence[dict], path: str, num: int = 20) -> str:
    """A horizontal bar chart of the ``num`` worst layers' RMSE / scale (PNG)."""
    # lazy: matplotlib (and its Agg backend choice) only when a picture is drawn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after matplotlib.use, as pyplot requires

    worst = list(rows[:num])[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(worst) + 1.2))
    labels = [f"{r['op_name']} {_short(r['tensor_name'])}" for r in worst]
    ax.barh(range(len(worst)), [r["rmse_over_scale"] for r in worst], color="tab:red")
    ax.axvline(1 / math.sqrt(12), color="gray", ls="--", lw=1, label="rounding only (0.29)")
    ax.set_yticks(range(len(worst)), labels, fontsize=7)
    ax.set_xlabel("RMSE / scale (quantization steps)")
    ax.set_title(f"worst {len(worst)} of {len(rows)} quantized layers (int8 vs float, same "
                 "input)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path


def _short(tensor_name: str, width: int = 48) -> str:
    name = tensor_name.split(";")[0]
    return name if len(name) <= width else "..." + name[-width:]


def format_worst(rows: Sequence[dict], num: int = 5) -> str:
    lines = [f"worst {min(num, len(rows))} of {len(rows)} quantized layers (RMSE / scale; "
             "0.29 = rounding only):"]
    for r in rows[:num]:
        lines.append(f"  {r['rank']:>3}. {r['rmse_over_scale']:7.3f}  {r['op_name']:<18} "
                     f"{_short(r['tensor_name'], 70)}  scale {r['scale']:.3g}, range "
                     f"[{r['range_min']:.3g}, {r['range_max']:.3g}]")
    return "\n".join(lines)


def quantized_model(debugger, denylisted_nodes: Sequence[str] = ()) -> bytes:
    """The debugger's (non-instrumented) quantized file, float I/O, with the given tensors'
    ops kept in float (none: full int8)."""
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(denylisted_nodes) or None)
    return debugger.get_nondebug_quantized_model()


def write_mixed_models(debugger, rows: Sequence[dict], num_float: int, out_dir: str,
                       stem: str) -> dict[str, str]:
    """Writes the full-int8 file and the one with the ``num_float`` worst layers in float.

    Returns:
        {"int8": path, "mixed": path}.
    """
    if num_float < 1 or num_float > len(rows):
        raise ValueError(f"--float_layers must be in [1, {len(rows)}], got {num_float}")
    paths = {"int8": os.path.join(out_dir, f"{stem}_int8_debugger.tflite"),
             "mixed": os.path.join(out_dir, f"{stem}_int8_{num_float}float.tflite")}
    write_bytes_atomic(paths["int8"], quantized_model(debugger))
    write_bytes_atomic(paths["mixed"], quantized_model(
        debugger, [r["tensor_name"] for r in rows[:num_float]]))
    return paths


def report(model: keras.Model, crops: np.ndarray, out_dir: str, model_path: str = "",
           num_plot: int = 20):
    """Runs the debugger and writes ``layer_stats.csv`` and ``layer_stats.png``.

    Returns:
        (rows worst first, the debugger for ``write_mixed_models``).
    """
    debugger = make_debugger(model, crops, model_path)
    rows = layer_stats(debugger, model_path)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(rows, os.path.join(out_dir, "layer_stats.csv"))
    plot_worst(rows, os.path.join(out_dir, "layer_stats.png"), num_plot)
    return rows, debugger
