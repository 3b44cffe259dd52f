"""The Android drop-in: an int8 body with in-graph keypoint decoding, plus its model card.

``fasterpose_singlepose.tflite`` replaces ``movenet_lightning.tflite`` in the TensorFlow Lite
pose-estimation Android sample (tensorflow/examples, lite/examples/pose_estimation/android).
Its contract, read from the sample's ``ml/MoveNet.kt``: one uint8 input [1, S, S, 3] (RGB
0..255, the app does not normalise) and one float32 output [1, 1, 17, 3] = (y, x, score) per
COCO keypoint, y and x in [0, 1] of the input square.

The body (backbone + head + sigmoid) runs in int8; ``HeatmapPeakDecode`` runs in float after
the heatmap DEQUANTIZE (from a QAT body the converter keeps the row-maximum MAX_POOL_2D ops in
int8 and dequantizes their result, which is exact). QAT: the decode layer is appended to the QAT
model without quantize annotations, so it has no fake-quant ranges and the converter (given
no representative data) keeps it float. PTQ: the converter would calibrate and quantize
every op, so the decode's tensors are removed from quantization with
``tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=...)``, and the uint8
input / float32 output interface is then set by editing the flatbuffer
(``fptflite.serving.tflite_interface``).
"""

from __future__ import annotations

import collections
import os
import tempfile

import numpy as np
import tensorflow as tf
import tf_keras as keras

from fptflite.evaluation.postprocess import KEYPOINT_SCORE_THRESHOLD
from fptflite.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINT_NAMES, COCO_SKELETON
from fptflite.serving import tflite_interface
from fptflite.serving.decode_layer import HeatmapPeakDecode
from fptflite.tflite import audit as audit_lib
from fptflite.tflite import convert as convert_lib
from fptflite.tflite.runner import round_half_away_from_zero
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

DROPIN_FILENAME = "fasterpose_singlepose.tflite"
HEATMAP_FILENAME = "fasterpose_singlepose_heatmaps.tflite"
DECODE_LAYER_NAME = "keypoint_decode"
INT8_MODES = ("qat", "ptq")
# Ops that the classic GPU delegate (tensorflow-lite-gpu 2.5.0) or XNNPACK cannot run, or
# that make MoveNet's own decoding fall back to the CPU.
FORBIDDEN_OPS = frozenset({"ARG_MAX", "ARG_MIN", "GATHER", "GATHER_ND", "FLOOR_DIV",
                           "FLOOR_MOD", "CAST", "TOPK_V2", "CUSTOM"})
# Float ops the in-graph decode may use (see decode_layer's docstring).
DECODE_OPS = frozenset({"DEQUANTIZE", "TRANSPOSE", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                        "RESIZE_BILINEAR", "SUB", "ADD", "MUL", "DIV", "RELU", "RELU_N1_TO_1",
                        "MAXIMUM", "MINIMUM", "EXP", "LOG", "RESHAPE", "CONCATENATION"})
OUTPUT_LAYOUT = "[1, 1, 17, 3]: (y, x, score) per COCO keypoint; y, x in [0, 1] of the input"


def build_dropin_model(body: keras.Model) -> keras.Model:
    """Body [N, S, S, 3] -> heatmaps [N, S/4, S/4, K] becomes [N, S, S, 3] -> [N, 1, K, 3].

    Raises:
        ValueError: the body's input is not square RGB or its output is not heatmaps.
    """
    in_shape = tuple(body.input_shape)
    out_shape = tuple(body.output_shape)
    if len(in_shape) != 4 or in_shape[1] != in_shape[2] or in_shape[3] != 3:
        raise ValueError(f"{body.name}: the Android drop-in needs a square RGB input "
                         f"[N, S, S, 3], got {in_shape} (train a config with a square "
                         "input_size, e.g. 192x192)")
    if len(out_shape) != 4 or out_shape[3] != len(COCO_KEYPOINT_NAMES):
        raise ValueError(f"{body.name}: expected heatmaps [N, H, W, 17], got {out_shape}")
    keypoints = HeatmapPeakDecode(name=DECODE_LAYER_NAME)(body.outputs[0])
    return keras.Model(body.inputs, keypoints, name=f"{body.name}_singlepose")


def convert_dropin(body: keras.Model, int8: str,
                   calibration_images: np.ndarray | None = None) -> bytes:
    """Converts body + in-graph decode to a uint8-in, float32-out .tflite.

    Args:
        body: a QAT model (int8="qat") or the float model (int8="ptq").
        int8: "qat" or "ptq".
        calibration_images: eval crops [N, S, S, 3] float 0..255 (PTQ only).
    """
    from fptflite import quantization

    if int8 not in INT8_MODES:
        raise ValueError(f"int8 must be one of {INT8_MODES}, got {int8!r}")
    quantized = quantization.is_quantized(body)
    if int8 == "qat" and not quantized:
        raise ValueError(f"int8=qat needs a QAT model, but {body.name} has no fake-quant layers")
    if int8 == "ptq" and quantized:
        raise ValueError(f"int8=ptq needs the float model, but {body.name} is a QAT model")
    if calibration_images is None:
        raise ValueError("the drop-in conversion needs calibration images (eval crops)")
    if quantized:
        convert_lib.match_qat_biases_to_file(body)  # as convert() does for int8_qat files
        return _convert_qat(build_dropin_model(body))
    return _convert_selective(build_dropin_model(body), calibration_images)


def _convert_qat(model: keras.Model) -> bytes:
    """A QAT body's trained ranges make it int8; the un-annotated decode has no ranges, so the
    converter (given no representative data) keeps it float. uint8 input, float32 output.
    (The QuantizationDebugger of the PTQ path does not accept QAT models.)"""
    with convert_lib.distinct_uniform_biases(model):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.uint8
        return converter.convert()


def _decode_tensor_names(model: keras.Model) -> list[str]:
    """Output tensor names of the decode's ops in the float .tflite of ``model``."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    interp = audit_lib.load_interpreter(model_content=converter.convert(), delegates=False)
    names = [t["name"] for t in interp.get_tensor_details()
             if t["name"].split(";")[0].startswith(DECODE_LAYER_NAME + "/")
             or f"/{DECODE_LAYER_NAME}/" in t["name"]]
    names.append(interp.get_output_details()[0]["name"])
    return sorted(set(names))


def _convert_selective(model: keras.Model, calibration_images: np.ndarray) -> bytes:
    """int8 everywhere except the decode layer's tensors; uint8 input, float32 output."""
    dataset = convert_lib.representative_dataset(calibration_images)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.representative_dataset = dataset
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=_decode_tensor_names(model), fully_quantize=True)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=dataset, debug_options=options)
    return tflite_interface.uint8_input_float_output(debugger.get_nondebug_quantized_model())


def _split_body_decode(interp) -> tuple[collections.Counter, list[str], list[str]]:
    """Op counts, float compute ops of the body (before the heatmap DEQUANTIZE) and the ops
    from that DEQUANTIZE on (the decode), in execution order."""
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no op list
    start = next((i for i, op in enumerate(ops) if op["op_name"] == "DEQUANTIZE"), len(ops))
    body_float = []
    for op in ops[:start]:
        ids = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0 and i in tensors]
        if op["op_name"] not in audit_lib.EDGE_OPS and \
                any(tensors[i]["dtype"] == np.float32 for i in ids):
            body_float.append(op["op_name"])
    decode = [op["op_name"] for op in ops[start:]]
    return collections.Counter(op["op_name"] for op in ops), body_float, decode


def audit_dropin(path: str) -> dict:
    """Checks a drop-in file against the MoveNet contract and the op rules.

    Returns:
        dict with "input"/"output" (shape, dtype), "ops" (name -> count), "decode_ops"
        (from the heatmap DEQUANTIZE on), "body_float_ops" (must be empty),
        "forbidden_ops", "gpu_compatibility" (the TFLite analyzer's GPU report), "problems"
        and "passed".
    """
    interp = audit_lib.load_interpreter(path, delegates=False)
    inp, out = interp.get_input_details(), interp.get_output_details()
    counts, body_float, decode_ops = _split_body_decode(interp)
    problems = []
    if len(inp) != 1 or inp[0]["dtype"] != np.uint8 or len(inp[0]["shape"]) != 4 \
            or inp[0]["shape"][1] != inp[0]["shape"][2] or inp[0]["shape"][3] != 3:
        problems.append(f"input must be one uint8 [1, S, S, 3], got "
                        f"{[(list(d['shape']), d['dtype'].__name__) for d in inp]}")
    if len(out) != 1 or out[0]["dtype"] != np.float32 or \
            list(out[0]["shape"]) != [1, 1, len(COCO_KEYPOINT_NAMES), 3]:
        problems.append(f"output must be one float32 [1, 1, 17, 3], got "
                        f"{[(list(d['shape']), d['dtype'].__name__) for d in out]}")
    forbidden = sorted(op for op in counts if op in FORBIDDEN_OPS or op.startswith("Flex"))
    if forbidden:
        problems.append(f"ops the GPU delegate / XNNPACK cannot run: {forbidden}")
    if body_float:
        problems.append(f"float compute ops in the int8 body: {sorted(set(body_float))}")
    # After the heatmap DEQUANTIZE nothing may be quantized again (a QUANTIZE there would put
    # coordinates on an int8 grid). A QAT body may keep the row-maximum MAX_POOL_2D ops in
    # int8 and dequantize their result: exact, since maxima are int8 heatmap values.
    if "QUANTIZE" in decode_ops or sorted(set(decode_ops) - DECODE_OPS):
        problems.append(f"the decode must be DEQUANTIZE and float ops of {sorted(DECODE_OPS)}"
                        f" (no QUANTIZE), got {sorted(set(decode_ops))}")
    gpu = audit_lib.gpu_compatibility_report(path)
    if "not compatible" in gpu.lower() or "error" in gpu.lower():
        problems.append(f"TFLite analyzer GPU report: {gpu}")
    return {
        "file": os.path.basename(path),
        "size_bytes": os.path.getsize(path),
        "input": {"shape": [int(d) for d in inp[0]["shape"]],
                  "dtype": inp[0]["dtype"].__name__,
                  "quantization": [float(v) for v in inp[0]["quantization"]]},
        "output": {"shape": [int(d) for d in out[0]["shape"]],
                   "dtype": out[0]["dtype"].__name__},
        "ops": dict(sorted(counts.items())),
        "num_ops": int(sum(counts.values())),
        "decode_ops": sorted(set(decode_ops)),
        "body_float_ops": sorted(set(body_float)),
        "forbidden_ops": forbidden,
        "gpu_compatibility": gpu,
        "problems": problems,
        "passed": not problems,
    }


def format_dropin_audit(report: dict) -> str:
    return (audit_lib.format_audit_header(report) + "\n"
            f"  in-graph decode (float) ops: {', '.join(report['decode_ops'])}\n"
            f"  forbidden ops: {report['forbidden_ops'] or 'none'}\n"
            f"  TFLite analyzer GPU report: {report['gpu_compatibility']}")


def model_card(report: dict, int8: str, source_model: str, measured: dict | None = None
               ) -> dict:
    """The model_card.json written next to the drop-in file."""
    s = report["input"]["shape"][1]
    return {
        "file": DROPIN_FILENAME,
        "replaces": "movenet_lightning.tflite (or movenet_thunder.tflite) in the TensorFlow "
                    "Lite pose-estimation Android sample",
        "input_size": [s, s],
        "input_dtype": report["input"]["dtype"],
        "input": "RGB 0..255 of a square crop, bilinear resize to SxS; normalisation is "
                 "inside the model",
        "output_dtype": report["output"]["dtype"],
        "output_layout": OUTPUT_LAYOUT,
        "keypoint_names": list(COCO_KEYPOINT_NAMES),
        "skeleton": [list(e) for e in COCO_SKELETON],
        "flip_pairs": [list(p) for p in COCO_FLIP_PAIRS],
        "score_threshold": KEYPOINT_SCORE_THRESHOLD,
        "decode": "in-graph: peak + DARK sub-pixel refinement (fptflite.serving."
                  "decode_layer.HeatmapPeakDecode), float after an int8 body",
        "ops": report["ops"],
        "decode_ops": report["decode_ops"],
        "gpu_compatibility": report["gpu_compatibility"],
        "source_model": os.path.abspath(source_model),
        "int8": int8,
        "size_bytes": report["size_bytes"],
        **(measured or {}),
    }


def write_assets(out_dir: str, data: bytes, int8: str, source_model: str,
                 measured: dict | None = None) -> dict:
    """Writes the drop-in file, keypoints.txt and model_card.json atomically; audits first.

    The .tflite is audited from a temporary file and only renamed into ``out_dir`` when it
    passes, so a failing export leaves the folder as it was.

    Returns:
        The model card dict.

    Raises:
        ValueError: the file fails its audit.
    """
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        path = os.path.join(tmp, DROPIN_FILENAME)
        with open(path, "wb") as f:
            f.write(data)
        report = audit_dropin(path)
    print(format_dropin_audit(report), flush=True)
    if not report["passed"]:
        raise ValueError(f"the drop-in model for {out_dir} failed its audit: "
                         f"{report['problems']}")
    card = model_card(report, int8, source_model, measured)
    write_bytes_atomic(os.path.join(out_dir, DROPIN_FILENAME), data)
    write_bytes_atomic(os.path.join(out_dir, "keypoints.txt"),
                       ("\n".join(COCO_KEYPOINT_NAMES) + "\n").encode())
    write_json_atomic(os.path.join(out_dir, "model_card.json"), card)
    return card


def heatmap_tensor_index(interp) -> int:
    """Index of the int8 heatmaps [1, h, h, K] in a drop-in's interpreter: the largest int8
    op output of that shape (the body's last op; the decode reads it through DEQUANTIZE ops,
    a QAT file after an int8 TRANSPOSE or row maximum). Read it with ``read_heatmaps``."""
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the public API has no op list
    k = len(COCO_KEYPOINT_NAMES)
    candidates = [i for op in ops for i in op["outputs"]
                  if i in tensors and tensors[i]["dtype"] == np.int8
                  and len(tensors[i]["shape"]) == 4 and tensors[i]["shape"][3] == k
                  and tensors[i]["shape"][1] == tensors[i]["shape"][2] > 1]
    if not candidates:
        raise ValueError(f"the drop-in has no int8 heatmaps [1, h, h, {k}] to compare with")
    return int(max(candidates, key=lambda i: int(np.prod(tensors[i]["shape"]))))


def read_heatmaps(interp, index: int) -> np.ndarray:
    """The int8 heatmaps at ``index`` (after ``invoke``) as float [1, h, w, K]."""
    detail = next(t for t in interp.get_tensor_details() if t["index"] == index)
    scale, zero_point = detail["quantization"]
    return (interp.get_tensor(index).astype(np.float32) - zero_point) * np.float32(scale)


def decode_parity(dropin_path: str, crops: np.ndarray) -> dict:
    """In-graph decode vs ``codec.decode_heatmaps(method="dark")`` of the same file's own
    int8 heatmaps (read from the interpreter), in heatmap pixels.

    Args:
        crops: [N, S, S, 3] uint8-valued crops.

    Returns:
        {"num_crops", "mean_px", "max_px", "max_score_diff"} over all N x K keypoints.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from fptflite.codec import decode_heatmaps

    interp = Interpreter(
        model_path=dropin_path, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hm_index = heatmap_tensor_index(interp)
    dists, score_diffs = [], []
    for crop in crops:
        interp.set_tensor(inp["index"],
                          np.clip(round_half_away_from_zero(crop), 0, 255)[None].astype(np.uint8))
        interp.invoke()
        kp = interp.get_tensor(out["index"])[0, 0]  # [K, 3]
        hm = read_heatmaps(interp, hm_index)  # [1, h, w, K]
        h, w = hm.shape[1:3]
        ref, scores = decode_heatmaps(hm, "dark")
        u, v = kp[:, 1] * w - 0.5, kp[:, 0] * h - 0.5
        dists.append(np.hypot(u - ref[0, :, 0], v - ref[0, :, 1]))
        score_diffs.append(np.abs(kp[:, 2] - scores[0]))
    d = np.concatenate(dists)
    return {"num_crops": int(len(crops)), "mean_px": float(d.mean()),
            "max_px": float(d.max()), "max_score_diff": float(np.max(score_diffs))}


def export_android(body: keras.Model, int8: str, out_dir: str, calibration_images: np.ndarray,
                   source_model: str, work_dir: str | None = None,
                   measured: dict | None = None, threads: tuple[int, ...] = (2, 4)) -> dict:
    """Converts, audits, measures and writes the drop-in assets into ``out_dir``.

    Also writes the same body's heatmap-output int8 file (``HEATMAP_FILENAME``, the existing
    op audit must pass on it) into ``work_dir`` (default ``out_dir``), for the int8 body audit
    and the latency comparison.

    Args:
        body: QAT model (int8="qat") or float model (int8="ptq").
        measured: extra card entries measured elsewhere (e.g. the main job's AP and parity).

    Returns:
        The model card.
    """
    from fptflite.tflite.benchmark import compare_latency

    work_dir = work_dir or out_dir
    os.makedirs(work_dir, exist_ok=True)
    heatmap_path = os.path.join(work_dir, HEATMAP_FILENAME)
    fmt = "int8_qat" if int8 == "qat" else "int8_ptq"
    write_bytes_atomic(heatmap_path, convert_lib.convert(body, fmt, calibration_images))
    body_audit = audit_lib.audit(heatmap_path, expect_int8=True)
    print(audit_lib.format_audit(body_audit), flush=True)
    if not body_audit["passed"]:
        raise ValueError(f"the int8 body {heatmap_path} failed the op audit: "
                         f"{body_audit['problems']}")
    data = convert_dropin(body, int8, calibration_images)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        path = os.path.join(tmp, DROPIN_FILENAME)
        with open(path, "wb") as f:
            f.write(data)
        parity = decode_parity(path, calibration_images[:64])
        latency = {}
        for n in threads:
            timed = compare_latency(path, heatmap_path, n)
            latency[f"{n}_threads"] = {"dropin_ms": round(timed["ms"], 3),
                                       "heatmap_int8_ms": round(timed["reference_ms"], 3),
                                       "decode_overhead": round(timed["overhead"], 4)}
    print(f"in-graph vs Python DARK decode on {parity['num_crops']} crops: mean "
          f"{parity['mean_px']:.4f} px, max {parity['max_px']:.4f} px (heatmap pixels)",
          flush=True)
    card_extra = {"int8_body_audit": {"file": HEATMAP_FILENAME, "passed": True,
                                      "ops": body_audit["ops"]},
                  "decode_parity_heatmap_px": parity,
                  "latency_ms_xnnpack_cpu": latency,
                  **(measured or {})}
    return write_assets(out_dir, data, int8, source_model, card_extra)


def measured_from_report(report: dict, int8: str) -> dict:
    """The model card's AP and parity entries from a main job report (report.json dict)."""
    key = f"int8_{int8}"
    return {"ap": {"float": report.get("float_ap"), key: report.get(f"{key}_ap"),
                   "delta_points": report.get(f"{key}_delta_points")},
            "parity": report.get("parity", {}).get(key)}
