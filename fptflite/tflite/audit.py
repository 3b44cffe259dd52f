"""Op audit of a .tflite file: op counts, Flex ops, float compute in int8 files,
DEPTH_TO_SPACE as one op, and TFLite's GPU-delegate compatibility report."""

from __future__ import annotations

import collections
import contextlib
import io
import os

import numpy as np

from fptflite.tflite.litert import Op, list_ops, load_interpreter, tensor_details

EDGE_OPS = {"QUANTIZE", "DEQUANTIZE"}
# Tensor dtypes that make an op that reads or writes them float compute.
_FLOAT_TYPES = (np.float32, np.float16, np.float64)


def gpu_compatibility_report(model_path: str) -> str:
    """Text of TFLite's model analyzer with its GPU delegate compatibility check."""
    import tensorflow as tf  # the analyzer is TensorFlow's; the rest of the audit is LiteRT

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_path=model_path, gpu_compatibility=True)
    text = buf.getvalue()
    lines = [ln for ln in text.splitlines() if "GPU" in ln or "gpu" in ln]
    return "\n".join(lines) if lines else "no GPU compatibility issues reported"


def saturated_int32_biases(interpreter) -> list[str]:
    """Names of the quantized int32 constant tensors (conv/FC biases) holding a value at the
    int32 limit: the converter clamped a bias that needed more than 32 bits."""
    names = []
    for t in interpreter.get_tensor_details():
        if t["dtype"] != np.int32 or not len(t["quantization_parameters"]["scales"]):
            continue
        try:
            value = interpreter.get_tensor(t["index"])
        except ValueError:  # not a constant (no data outside an invocation)
            continue
        if value.size and (value.max() >= np.iinfo(np.int32).max
                           or value.min() <= np.iinfo(np.int32).min + 1):
            names.append(t["name"])
    return names


def float_compute_ops(ops: list[Op], tensors: dict[int, dict]) -> list[str]:
    """Names of the ops other than QUANTIZE/DEQUANTIZE that read or write a float tensor, in
    execution order (one entry per op).

    Args:
        ops: ``litert.list_ops`` of the file.
        tensors: ``litert.tensor_details`` of an interpreter of the same file.
    """
    names = []
    for op in ops:
        ids = [i for i in op.inputs + op.outputs if i >= 0 and i in tensors]
        if op.name not in EDGE_OPS and any(tensors[i]["dtype"] in _FLOAT_TYPES for i in ids):
            names.append(op.name)
    return names


def audit(model_path: str, expect_int8: bool) -> dict:
    """Audits one .tflite file.

    Returns:
        dict with "ops" (name -> count), "flex_ops", "float_compute_ops" (ops other than
        QUANTIZE/DEQUANTIZE that read or write float tensors), "depth_to_space" (count),
        "input"/"output" dtype and quantization, "gpu_compatibility", and "passed" with the
        list of "problems" (empty when passed).
    """
    interp = load_interpreter(model_path, delegates=False)
    ops = list_ops(model_path)
    counts = collections.Counter(op.name for op in ops)
    flex = sorted({op.name for op in ops if op.name.startswith("Flex") or op.name == "CUSTOM"})
    float_ops = float_compute_ops(ops, tensor_details(interp))
    problems = []
    saturated = saturated_int32_biases(interp)
    if saturated:
        problems.append("int32 biases saturated (a bias beyond int32 at input_scale * "
                        f"weight_scale; the file computes another bias than the model): "
                        f"{saturated[:5]}")
    if flex:
        problems.append(f"Flex/custom ops present: {flex}")
    if expect_int8 and float_ops:
        problems.append(f"float compute ops in an int8 file: {sorted(set(float_ops))}")
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    has_d2s = counts.get("DEPTH_TO_SPACE", 0)
    report = {
        "file": os.path.basename(model_path),
        "size_bytes": os.path.getsize(model_path),
        "ops": dict(sorted(counts.items())),
        "num_ops": len(ops),
        "flex_ops": flex,
        "float_compute_ops": sorted(set(float_ops)),
        "depth_to_space": has_d2s,
        "saturated_int32_biases": saturated,
        "input": {"shape": [int(d) for d in inp["shape"]], "dtype": inp["dtype"].__name__,
                  "quantization": [float(v) for v in inp["quantization"]]},
        "output": {"shape": [int(d) for d in out["shape"]], "dtype": out["dtype"].__name__,
                   "quantization": [float(v) for v in out["quantization"]]},
        "gpu_compatibility": gpu_compatibility_report(model_path),
    }
    report["problems"] = problems
    report["passed"] = not problems
    return report


def format_audit_header(report: dict) -> str:
    """File, size, verdict, I/O and op counts of an audit report (three lines)."""
    ops = ", ".join(f"{k} x{v}" for k, v in report["ops"].items())
    status = "PASS" if report["passed"] else "FAIL: " + "; ".join(report["problems"])
    return (f"{report['file']} ({report['size_bytes'] / 1e6:.2f} MB): {status}\n"
            f"  input {report['input']['dtype']} {report['input']['shape']}, output "
            f"{report['output']['dtype']} {report['output']['shape']}\n"
            f"  ops ({report['num_ops']}): {ops}")


def format_audit(report: dict) -> str:
    return (format_audit_header(report) + "\n"
            f"  DEPTH_TO_SPACE ops: {report['depth_to_space']}; Flex ops: "
            f"{len(report['flex_ops'])}; float compute ops: "
            f"{report['float_compute_ops'] or 'none'}\n"
            f"  GPU delegate: {(report['gpu_compatibility'].splitlines() or [''])[0]}")
