"""Export a trained model to several .tflite formats, audited, with sidecar metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tf_keras as keras

from fptflite.tflite import audit as audit_lib
from fptflite.tflite import convert as convert_lib
from fptflite.tflite import metadata as metadata_lib
from fptflite.utils.io import write_bytes_atomic, write_json_atomic
from fptflite.utils.progress import ProgressCounter


def export_formats(
    out_dir: str,
    name: str,
    formats: Sequence[str],
    float_model: keras.Model | None,
    qat_model: keras.Model | None = None,
    calibration_images: np.ndarray | None = None,
    input_type: str = "uint8",
    output_type: str = "uint8",
    progress: bool = True,
) -> dict[str, dict]:
    """Converts, writes (atomically) and audits each format.

    Writes ``{name}_{fmt}.tflite``, its sidecar ``{name}_{fmt}.json`` and
    ``{name}_{fmt}.audit.json`` into ``out_dir``. (The int8_qat file's fidelity to its Keras
    QAT model is ``fptflite.evaluation.fidelity.check_qat_file``.)

    Returns:
        fmt -> {"path", "metadata", "audit"}.

    Raises:
        ValueError: a file fails its audit (after writing the audit JSON for inspection).
    """
    for fmt in formats:
        if fmt not in convert_lib.FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose from {convert_lib.FORMATS}")
    os.makedirs(out_dir, exist_ok=True)
    counter = ProgressCounter(len(formats), "converting", enabled=progress)
    results = {}
    for fmt in formats:
        model = qat_model if fmt == "int8_qat" else float_model
        if model is None:
            raise ValueError(f"{fmt} needs a {'QAT' if fmt == 'int8_qat' else 'float'} model")
        data = convert_lib.convert(model, fmt, calibration_images if fmt.startswith("int8")
                                   else None, input_type, output_type)
        path = os.path.join(out_dir, f"{name}_{fmt}.tflite")
        write_bytes_atomic(path, data)
        report = audit_lib.audit(path, expect_int8=fmt.startswith("int8"))
        write_json_atomic(os.path.splitext(path)[0] + ".audit.json", report)
        meta = metadata_lib.build_metadata(model, fmt, report, name)
        metadata_lib.write_metadata(path, meta)
        results[fmt] = {"path": path, "metadata": meta, "audit": report}
        counter.update(1)
        print(audit_lib.format_audit(report), flush=True)
        if not report["passed"]:
            raise ValueError(f"{path} failed its op audit: {report['problems']}")
        if name.startswith("fasterpose") and report["depth_to_space"] != 1:
            raise ValueError(f"{path}: expected exactly one DEPTH_TO_SPACE op, found "
                             f"{report['depth_to_space']}")
    return results
