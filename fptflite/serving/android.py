"""The Android drop-in export: the int8 body with in-graph keypoint decoding, verified, with
its model card.

``fasterpose_singlepose.tflite`` replaces ``movenet_lightning.tflite`` in the TensorFlow Lite
pose-estimation Android sample (tensorflow/examples, lite/examples/pose_estimation/android).
Its contract, read from the sample's ``ml/MoveNet.kt``: one uint8 input [1, S, S, 3] (RGB
0..255, the app does not normalise) and one float32 output [1, 1, 17, 3] = (y, x, score) per
COCO keypoint, y and x in [0, 1] of the input square.

This module composes the steps: ``dropin_build`` converts the file, ``dropin_check`` audits
it, compares its decode with the Python decode and times it; the assets are written only
when the file passes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator

import numpy as np
import tf_keras as keras

from fptflite.evaluation.postprocess import KEYPOINT_SCORE_THRESHOLD
from fptflite.keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINT_NAMES, COCO_SKELETON
from fptflite.serving import dropin_build, dropin_check
from fptflite.tflite import audit as audit_lib
from fptflite.tflite import convert as convert_lib
from fptflite.utils.io import write_bytes_atomic, write_json_atomic

DROPIN_FILENAME = "fasterpose_singlepose.tflite"
HEATMAP_FILENAME = "fasterpose_singlepose_heatmaps.tflite"
OUTPUT_LAYOUT = "[1, 1, 17, 3]: (y, x, score) per COCO keypoint; y, x in [0, 1] of the input"


@contextlib.contextmanager
def _temporary_dropin(data: bytes, directory: str) -> Iterator[str]:
    """Yields the path of ``data`` written as ``DROPIN_FILENAME`` into a temporary folder in
    ``directory`` (removed afterwards)."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, DROPIN_FILENAME)
        with open(path, "wb") as f:
            f.write(data)
        yield path


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
        "gpu_residency": report["gpu_residency"],
        "web_gpu_residency": report["web_gpu_residency"],
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
    with _temporary_dropin(data, out_dir) as path:
        report = dropin_check.audit_dropin(path)
    print(dropin_check.format_dropin_audit(report), flush=True)
    if not report["passed"]:
        raise ValueError(f"the drop-in model for {out_dir} failed its audit: "
                         f"{report['problems']}")
    card = model_card(report, int8, source_model, measured)
    write_bytes_atomic(os.path.join(out_dir, DROPIN_FILENAME), data)
    write_bytes_atomic(os.path.join(out_dir, "keypoints.txt"),
                       ("\n".join(COCO_KEYPOINT_NAMES) + "\n").encode())
    write_json_atomic(os.path.join(out_dir, "model_card.json"), card)
    return card


def _write_heatmap_body(body: keras.Model, int8: str, calibration_images: np.ndarray,
                        work_dir: str) -> tuple[str, dict]:
    """Converts the body alone (heatmap output) to ``HEATMAP_FILENAME`` in ``work_dir`` and
    audits it.

    Returns:
        (path, the op audit report).

    Raises:
        ValueError: the file fails the op audit.
    """
    os.makedirs(work_dir, exist_ok=True)
    heatmap_path = os.path.join(work_dir, HEATMAP_FILENAME)
    fmt = "int8_qat" if int8 == "qat" else "int8_ptq"
    # Batch 1 like the drop-in, so that the two files are compared like for like.
    write_bytes_atomic(heatmap_path, convert_lib.convert(body, fmt, calibration_images,
                                                         batch_size=dropin_build.DROPIN_BATCH))
    body_audit = audit_lib.audit(heatmap_path, expect_int8=True)
    print(audit_lib.format_audit(body_audit), flush=True)
    if not body_audit["passed"]:
        raise ValueError(f"the int8 body {heatmap_path} failed the op audit: "
                         f"{body_audit['problems']}")
    return heatmap_path, body_audit


def _measure_dropin(data: bytes, heatmap_path: str, crops: np.ndarray, work_dir: str,
                    threads: tuple[int, ...], min_runtime: str | None,
                    min_runtime_required: bool = False) -> tuple[dict, dict, dict | None]:
    """Decode parity on ``crops`` [N, S, S, 3], latency against the heatmap file and the run
    on the oldest runtime it must support, of the drop-in ``data`` written to a temporary
    file in ``work_dir``.

    Returns:
        (``dropin_check.decode_parity``, ``dropin_check.measure_latency``,
        ``dropin_check.check_runs_on`` or None) results.

    Raises:
        ValueError: the file does not run on ``min_runtime`` (naming the op it lacks).
    """
    with _temporary_dropin(data, work_dir) as path:
        old = dropin_check.check_runs_on(path, min_runtime, crops[0], min_runtime_required) \
            if min_runtime else None
        parity = dropin_check.decode_parity(path, crops)
        latency = dropin_check.measure_latency(path, heatmap_path, threads)
    print(f"in-graph vs Python DARK decode on {parity['num_crops']} crops: mean "
          f"{parity['mean_px']:.4f} px, max {parity['max_px']:.4f} px (heatmap pixels)",
          flush=True)
    return parity, latency, old


def export_android(body: keras.Model, int8: str, out_dir: str, calibration_images: np.ndarray,
                   source_model: str, work_dir: str | None = None,
                   measured: dict | None = None, threads: tuple[int, ...] = (2, 4),
                   min_runtime: str | None = "2.14", min_runtime_required: bool = False,
                   agreement_batches: Iterable[np.ndarray] | None = None) -> dict:
    """Converts, audits, measures and writes the drop-in assets into ``out_dir``.

    Also writes the same body's heatmap-output int8 file (``HEATMAP_FILENAME``, the existing
    op audit must pass on it) into ``work_dir`` (default ``out_dir``), for the int8 body audit
    and the latency comparison.

    Args:
        body: QAT model (int8="qat") or float model (int8="ptq").
        int8: "qat" or "ptq".
        out_dir: the assets folder (drop-in file, keypoints.txt, model_card.json).
        calibration_images: eval crops [N, S, S, 3] float 0..255; the first 64 also measure
            the decode parity.
        source_model: the Keras file the body was loaded from (for the card).
        work_dir: where the heatmap-output file goes (default ``out_dir``).
        measured: extra card entries measured elsewhere (e.g. the main job's AP and parity).
        threads: the CPU thread counts the latency is measured with.
        min_runtime: the oldest runtime the file must load and run on
            (``dropin_check.MIN_RUNTIMES``; default the Android sample's 2.14); None skips.
            Where that runtime is not installed, the card says so and the export goes on.
        min_runtime_required: raise ``RuntimeNotInstalled`` instead (asked for explicitly).
        agreement_batches: batches of crops [B, S, S, 3] (e.g. the val crops, streamed) on
            which the drop-in's keypoints on every runtime are compared with the CPU's
            (``dropin_check.runtime_agreement``); None skips.

    Returns:
        The model card.

    Raises:
        ValueError: the heatmap file or the drop-in file fails its audit, or the drop-in
            does not run on ``min_runtime``.
    """
    work_dir = work_dir or out_dir
    heatmap_path, body_audit = _write_heatmap_body(body, int8, calibration_images, work_dir)
    data = dropin_build.convert_dropin(body, int8, calibration_images)
    parity, latency, old = _measure_dropin(data, heatmap_path, calibration_images[:64],
                                           work_dir, threads, min_runtime,
                                           min_runtime_required)
    agreement = None
    if agreement_batches is not None:
        with _temporary_dropin(data, work_dir) as path:
            agreement = dropin_check.runtime_agreement(path, agreement_batches)
    card_extra = {"int8_body_audit": {"file": HEATMAP_FILENAME, "passed": True,
                                      "ops": body_audit["ops"]},
                  "decode_parity_heatmap_px": parity,
                  "latency_ms_xnnpack_cpu": latency,
                  "runs_on": {"litert_2.3_cpu": True,
                              **({f"tflite_{min_runtime}": old} if old else {})},
                  **({"keypoints_vs_cpu_heatmap_px": agreement} if agreement else {}),
                  **(measured or {})}
    return write_assets(out_dir, data, int8, source_model, card_extra)


def measured_from_report(report: dict, int8: str) -> dict:
    """The model card's AP and parity entries from a main job report (report.json dict)."""
    key = f"int8_{int8}"
    return {"metric": report.get("metric"),
            "ap": {"float": report.get("float_score"), key: report.get(f"{key}_score"),
                   "delta_points": report.get(f"{key}_delta_points")},
            "parity": report.get("parity", {}).get(key),
            "runtimes": {name: _runtime_entry(row)
                         for name, row in report.get("runtimes", {}).items()}}


def _runtime_entry(row: dict) -> dict:
    """A runtime's line of the card: where the int8 body ran, its AP against the float
    model and its keypoints against the CPU runtime's, or why it did not run."""
    if not row["ran"]:
        return {"ran": False, "reason": row["reason"]}
    return {"ran": True, "ap": row["candidate_score"], "delta_points": row["score_delta_points"],
            "passed": row["passed"], "shift_vs_cpu_heatmap_px": row.get("shift_vs_cpu")}
