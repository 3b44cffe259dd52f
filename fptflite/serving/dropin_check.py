"""Verifying an Android drop-in file: the MoveNet contract, the op rules, the in-graph decode
against the Python decode of the file's own heatmaps, and its latency.

The contract, read from the TensorFlow Lite pose-estimation Android sample's ``ml/MoveNet.kt``:
one uint8 input [1, S, S, 3] and one float32 output [1, 1, 17, 3]. The op rules: an int8
body (no float compute before the heatmap DEQUANTIZE), a float decode of ``DECODE_OPS`` after
it, and none of ``FORBIDDEN_OPS`` anywhere. Running the file needs LiteRT only; the audit's
GPU report runs TensorFlow's analyzer.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable, Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from fptflite.codec import HEATMAP_STRIDE, decode_heatmaps
from fptflite.keypoints import COCO_KEYPOINT_NAMES
from fptflite.tflite import audit as audit_lib
from fptflite.tflite import litert, runtimes, web_runtime
from fptflite.tflite.benchmark import compare_latency
from fptflite.tflite.runner import round_half_away_from_zero

# Ops that the classic GPU delegate (tensorflow-lite-gpu 2.5.0) or XNNPACK cannot run, or
# that make MoveNet's own decoding fall back to the CPU.
FORBIDDEN_OPS = frozenset({"ARG_MAX", "ARG_MIN", "GATHER", "GATHER_ND", "FLOOR_DIV",
                           "FLOOR_MOD", "CAST", "TOPK_V2", "CUSTOM"})
# Float ops the in-graph decode may use (see decode_layer's docstring).
DECODE_OPS = frozenset({"DEQUANTIZE", "TRANSPOSE", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                        "RESIZE_BILINEAR", "SUB", "ADD", "MUL", "DIV", "RELU", "RELU_N1_TO_1",
                        "MAXIMUM", "MINIMUM", "EXP", "LOG", "RESHAPE", "CONCATENATION"})


def _split_body_decode(interp: Interpreter, ops: list[litert.Op]
                       ) -> tuple[collections.Counter, list[str], list[str]]:
    """Op counts, float compute ops of the body (before the heatmap DEQUANTIZE) and the ops
    from that DEQUANTIZE on (the decode), in execution order."""
    start = next((i for i, op in enumerate(ops) if op.name == "DEQUANTIZE"), len(ops))
    body_float = audit_lib.float_compute_ops(ops[:start], litert.tensor_details(interp))
    decode = [op.name for op in ops[start:]]
    return collections.Counter(op.name for op in ops), body_float, decode


def _interface_problems(inp: list[dict], out: list[dict]) -> list[str]:
    """The MoveNet contract: one uint8 [1, S, S, 3] input, one float32 [1, 1, 17, 3] output,
    both with batch 1 in their shape signatures too."""
    problems = []
    if len(inp) != 1 or inp[0]["dtype"] != np.uint8 or len(inp[0]["shape"]) != 4 \
            or inp[0]["shape"][1] != inp[0]["shape"][2] or inp[0]["shape"][3] != 3:
        problems.append(f"input must be one uint8 [1, S, S, 3], got "
                        f"{[(list(d['shape']), d['dtype'].__name__) for d in inp]}")
    if len(out) != 1 or out[0]["dtype"] != np.float32 or \
            list(out[0]["shape"]) != [1, 1, len(COCO_KEYPOINT_NAMES), 3]:
        problems.append(f"output must be one float32 [1, 1, 17, 3], got "
                        f"{[(list(d['shape']), d['dtype'].__name__) for d in out]}")
    dynamic = [[int(v) for v in d["shape_signature"]] for d in (*inp, *out)
               if -1 in list(d.get("shape_signature", []))]
    if dynamic:
        problems.append(f"the batch must be static (1) in the shape signature, got {dynamic}: "
                        "LiteRT.js refuses a dynamic [-1, S, S, 3] input and LiteRT's GPU "
                        "accelerator a graph with dynamic-sized tensors")
    return problems


def audit_dropin(path: str) -> dict:
    """Checks a drop-in file against the MoveNet contract and the op rules.

    Returns:
        dict with "input"/"output" (shape, dtype), "shape_signatures" (input and output: no
        -1, the batch is static), "ops" (name -> count), "decode_ops"
        (from the heatmap DEQUANTIZE on), "body_float_ops" (must be empty),
        "forbidden_ops", "gpu_compatibility" (the TFLite analyzer's GPU report),
        "gpu_residency" (``runtimes.gpu_residency``: every op on LiteRT's GPU accelerator,
        checked by running it, or why it could not run here), "web_gpu_residency"
        (``web_runtime.web_gpu_residency``: the same in LiteRT.js on WebGPU, where ops
        WebGPU lacks run on wasm: recorded, not a problem), "problems" and "passed".

    Raises:
        FileNotFoundError, ValueError: the file is missing or LiteRT cannot load it.
    """
    interp = litert.load_interpreter(path, delegates=False)
    inp, out = interp.get_input_details(), interp.get_output_details()
    counts, body_float, decode_ops = _split_body_decode(interp, litert.list_ops(path))
    problems = _interface_problems(inp, out)
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
    residency = runtimes.gpu_residency(path)
    if residency["checked"] and not residency["fully_accelerated"]:
        problems.append(f"ops stay off LiteRT's GPU accelerator: {residency['cpu_ops_log']}")
    return {
        "file": os.path.basename(path),
        "size_bytes": os.path.getsize(path),
        "input": {"shape": [int(d) for d in inp[0]["shape"]],
                  "dtype": inp[0]["dtype"].__name__,
                  "quantization": [float(v) for v in inp[0]["quantization"]]},
        "output": {"shape": [int(d) for d in out[0]["shape"]],
                   "dtype": out[0]["dtype"].__name__},
        "shape_signatures": {"input": [int(d) for d in inp[0]["shape_signature"]],
                             "output": [int(d) for d in out[0]["shape_signature"]]},
        "ops": dict(sorted(counts.items())),
        "num_ops": int(sum(counts.values())),
        "decode_ops": sorted(set(decode_ops)),
        "body_float_ops": sorted(set(body_float)),
        "forbidden_ops": forbidden,
        "gpu_compatibility": gpu,
        "gpu_residency": residency,
        "web_gpu_residency": web_runtime.web_gpu_residency(path),
        "problems": problems,
        "passed": not problems,
    }


def format_dropin_audit(report: dict) -> str:
    """The ``audit_dropin`` report as text: the file audit's header and the decode's ops."""
    return (audit_lib.format_audit_header(report) + "\n"
            f"  in-graph decode (float) ops: {', '.join(report['decode_ops'])}\n"
            f"  forbidden ops: {report['forbidden_ops'] or 'none'}\n"
            f"  TFLite analyzer GPU report: {report['gpu_compatibility']}\n"
            f"  LiteRT GPU accelerator: {_residency_line(report['gpu_residency'])}\n"
            f"  LiteRT.js WebGPU: {_residency_line(report['web_gpu_residency'])}")


def _residency_line(residency: dict) -> str:
    if not residency["checked"]:
        return f"not checked ({residency['reason']})"
    return "every op on the GPU" if residency["fully_accelerated"] else \
        f"ops stay on the CPU: {residency['cpu_ops_log']}"


def heatmap_tensor_index(interp: Interpreter, ops: list[litert.Op]) -> int:
    """Index of the int8 heatmaps [1, h, h, K] in a drop-in's interpreter: the largest int8
    op output of that shape (the body's last op; the decode reads it through DEQUANTIZE ops,
    a QAT file after an int8 TRANSPOSE or row maximum). Read it with ``read_heatmaps``.

    Args:
        interp: an interpreter of the drop-in file.
        ops: ``litert.list_ops`` of the same file.

    Raises:
        ValueError: no op writes int8 heatmaps.
    """
    tensors = litert.tensor_details(interp)
    k = len(COCO_KEYPOINT_NAMES)
    candidates = [i for op in ops for i in op.outputs
                  if i in tensors and tensors[i]["dtype"] == np.int8
                  and len(tensors[i]["shape"]) == 4 and tensors[i]["shape"][3] == k
                  and tensors[i]["shape"][1] == tensors[i]["shape"][2] > 1]
    if not candidates:
        raise ValueError(f"the drop-in has no int8 heatmaps [1, h, h, {k}] to compare with")
    return int(max(candidates, key=lambda i: int(np.prod(tensors[i]["shape"]))))


def read_heatmaps(interp: Interpreter, index: int) -> np.ndarray:
    """The int8 heatmaps at ``index`` (after ``invoke`` of an interpreter that preserves all
    tensors) as float32 [1, h, w, K]."""
    return litert.read_dequantized(interp, index)


def decode_parity(dropin_path: str, crops: np.ndarray) -> dict:
    """In-graph decode vs ``codec.decode_heatmaps(method="dark")`` of the same file's own
    int8 heatmaps (read from the interpreter), in heatmap pixels.

    Args:
        dropin_path: the drop-in .tflite.
        crops: [N, S, S, 3] uint8-valued crops.

    Returns:
        {"num_crops", "mean_px", "max_px", "max_score_diff"} over all N x K keypoints.
    """
    interp = litert.load_interpreter(dropin_path, delegates=False, preserve_all_tensors=True)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hm_index = heatmap_tensor_index(interp, litert.list_ops(dropin_path))
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


def measure_latency(dropin_path: str, heatmap_path: str, threads: Sequence[int]) -> dict:
    """The drop-in's XNNPACK CPU latency against the same body's heatmap-output int8 file,
    timed alternately (``benchmark.compare_latency``).

    Returns:
        {"{n}_threads": {"dropin_ms", "heatmap_int8_ms", "decode_overhead"}} per thread count.
    """
    latency = {}
    for n in threads:
        timed = compare_latency(dropin_path, heatmap_path, n)
        latency[f"{n}_threads"] = {"dropin_ms": round(timed["ms"], 3),
                                   "heatmap_int8_ms": round(timed["reference_ms"], 3),
                                   "decode_overhead": round(timed["overhead"], 4)}
    return latency


# Runtime versions ``check_runs_on`` can prove a file on (``--min_runtime``), and the runtime
# that stands for each: the Android pose sample pins a TensorFlow Lite 2.14-era runtime.
MIN_RUNTIMES = {"2.14": "tflite2.14"}


def check_runs_on(path: str, version: str, crop: np.ndarray, required: bool = False) -> dict:
    """Loads and runs ``path`` on the runtime of ``version`` (``MIN_RUNTIMES``).

    Args:
        crop: one crop [S, S, 3] float 0..255 to run.
        required: raise when the runtime is not installed here (the check was asked for
            explicitly); otherwise that is reported as not run, with the reason.

    Returns:
        {"runtime", "ran": True, "converter_min_runtime_version"}, or {"runtime",
        "ran": False, "reason"} when the runtime is not installed and not ``required``.

    Raises:
        ValueError: an unknown version, or the runtime cannot load or run the file: the
            message names the runtime, the file and the op (and version) it lacks.
        runtimes.RuntimeNotInstalled: the runtime is not installed and ``required``.
    """
    if version not in MIN_RUNTIMES:
        raise ValueError(f"--min_runtime {version!r}: one of {sorted(MIN_RUNTIMES)}")
    runtime = MIN_RUNTIMES[version]
    try:
        session = runtimes.open_session(runtime, path)
        session.run(np.clip(round_half_away_from_zero(crop), 0, 255)[None].astype(
            session.input.dtype))
    except runtimes.RuntimeNotInstalled as e:
        if required:
            raise
        print(f"not run: the TensorFlow Lite {version} check of {path}: {e}", flush=True)
        return {"runtime": runtime, "ran": False, "reason": str(e)}
    except runtimes.RuntimeUnavailable as e:
        raise ValueError(f"{path} does not run on TensorFlow Lite {version}: {e}") from e
    return {"runtime": runtime, "ran": True,
            "converter_min_runtime_version": litert.min_runtime_version(path)}


def _run_each(session: runtimes.Session, crops: np.ndarray) -> np.ndarray:
    """The drop-in's [N, K, 3] outputs, one crop per run (its batch is fixed at 1)."""
    return np.concatenate([session.run(c[None]) for c in crops]).reshape(len(crops), -1, 3)


def runtime_agreement(path: str, batches: Iterable[np.ndarray],
                      names: Sequence[str] = runtimes.RUNTIMES[1:]) -> dict[str, dict]:
    """The drop-in's keypoints on each runtime against its keypoints on the CPU runtime
    ("cpu", LiteRT with XNNPACK), streamed over batches of crops [B, S, S, 3] float 0..255.

    Returns:
        runtime -> {"ran": True, "num_keypoints", "mean_px", "p95_px", "max_px",
        "share_above_1px", "max_score_diff"} in heatmap pixels (S / 4 per unit of the
        output's [0, 1] coordinates), or {"ran": False, "reason"}.
    """
    sessions, out = {}, {}
    for name in names:
        try:
            sessions[name] = runtimes.open_session(name, path)
        except runtimes.RuntimeUnavailable as e:
            out[name] = {"ran": False, "reason": str(e)}
    cpu = runtimes.open_session("cpu", path)
    scale = cpu.input.shape[1] / HEATMAP_STRIDE
    dists = {name: [] for name in sessions}
    score_diff = dict.fromkeys(sessions, 0.0)
    for crops in batches:
        x = np.clip(round_half_away_from_zero(crops), 0, 255).astype(np.uint8)
        ref = _run_each(cpu, x)
        for name, session in sessions.items():
            got = _run_each(session, x)
            dists[name].append(np.hypot(*(got[..., :2] - ref[..., :2]).transpose(2, 0, 1))
                               .ravel() * scale)
            score_diff[name] = max(score_diff[name], float(np.abs(got[..., 2] -
                                                                  ref[..., 2]).max()))
    for name in sessions:
        d = np.concatenate(dists[name])
        out[name] = {"ran": True, "num_keypoints": int(d.size), "mean_px": float(d.mean()),
                     "p95_px": float(np.percentile(d, 95)), "max_px": float(d.max()),
                     "share_above_1px": float((d > 1).mean()),
                     "max_score_diff": score_diff[name]}
    return {name: out[name] for name in names}
