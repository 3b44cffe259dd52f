"""Which zoo files run whole on LiteRT's GPU accelerator, and why not where they do not.

    python -m benchmarks.gpu_residency [--models=fasterpose_mnv2:256x256,...] \
        [--formats=int8,float32] [--out_json=docs/results/gpu_residency.json]

Builds each zoo model with random weights (residency depends on the ops, not the weights),
converts it (int8 PTQ on a few random crops, and float32), compiles it for the GPU alone in a
worker process (``fptflite.tflite.runtimes.gpu_residency``) and prints one row per file:
every op on the GPU, or the accelerator's log lines on the ops that stay on the CPU. Needs a
Vulkan driver (``sh .ci/install_gpu_driver.sh`` on a machine without a GPU). Writes the
table as a results file for ``python -m benchmarks.report``.
"""

import os
import sys
import tempfile

import numpy as np
from absl import app

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.models import build_model
from fptflite.tflite import convert, runtimes
from fptflite.utils import cli
from fptflite.utils.cli import parse_hw
from fptflite.utils.io import write_json_atomic
from fptflite.utils.provenance import provenance

_MODELS = cli.flag("zoo_models", default=["fasterpose_mnv2:256x256", "fasterpose_r50:256x192",
               "simplebaseline_mnv2:256x192"])
_FORMATS = cli.flag("formats", default=["int8_ptq", "float32"])
_OUT = cli.flag("out_json", default="docs/results/gpu_residency.json")


def residency_rows(models: list[str], formats: list[str], work_dir: str) -> list[dict]:
    """[{"model", "input_size", "format", "residency"}] for each model and format."""
    rows = []
    crops = np.random.default_rng(0).uniform(0, 255, (4, 1, 1, 3)).astype(np.float32)
    for spec in models:
        name, size = spec.split(":")
        h, w = parse_hw(size)
        model = build_model(name, (h, w))
        calib = np.broadcast_to(crops, (4, h, w, 3)).copy()
        for fmt in formats:
            path = os.path.join(work_dir, f"{name}_{h}x{w}_{fmt}.tflite")
            with open(path, "wb") as f:
                f.write(convert.convert(model, fmt, calib if fmt.startswith("int8") else None))
            rows.append({"model": name, "input_size": [h, w], "format": fmt,
                         "residency": runtimes.gpu_residency(path)})
            print(rows[-1], flush=True)
    return rows


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        rows = residency_rows(list(_MODELS.value), list(_FORMATS.value), tmp)
    write_json_atomic(_OUT.value, {"kind": "gpu_residency", "provenance": provenance(sys.argv),
                                   "result": {"rows": rows}})
    print(f"wrote {_OUT.value}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
