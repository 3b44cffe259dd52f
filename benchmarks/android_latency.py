"""Latency of the Android drop-in (in-graph decode) vs the same body's heatmap-output int8 file.

    flock /tmp/team/cpu.lock python -m benchmarks.android_latency \
        --dropin=android_demo_assets/fasterpose_singlepose.tflite \
        --heatmap=runs/demo/tflite/fasterpose_singlepose_heatmaps.tflite --threads=2,4 --rounds=6

    # a COCO-size body with random weights (PTQ on random crops; timing does not depend on
    # the weights): both files are converted into a temporary dir first
    python -m benchmarks.android_latency --model=fasterpose_mnv2 --input_size=256

LiteRT interpreter with XNNPACK on the CPU, one image, both files timed alternately in the same
run (``rounds`` x ``runs`` invocations each after warm-up); prints a table with the decode's
share. The drop-in file's decode is what the app no longer runs in Kotlin.
"""

import os
import sys
import tempfile

import numpy as np
from absl import app, flags

from fptflite.tflite.benchmark import compare_latency
from fptflite.utils import cli

_DROPIN = flags.DEFINE_string("dropin", None, "The drop-in .tflite (keypoint output).")
_HEATMAP = flags.DEFINE_string("heatmap", None, "The same body's heatmap-output int8 .tflite.")
_MODEL = cli.flag("zoo_model")
_INPUT_SIZE = cli.flag("input_size", default="256x256",
                       help_note="Here: square, for --zoo_model.")
_NUM_CALIB = flags.DEFINE_integer("random_crops", 8, "Random calibration crops for "
                                  "--zoo_model.")
_THREADS = cli.flag("thread_counts", default=["2", "4"])
_RUNS = cli.flag("runs")
_ROUNDS = cli.flag("rounds", default=4)


def convert_random_body(name: str, size: tuple[int, int], num_calibration: int, out_dir: str
                        ) -> tuple[str, str]:
    """A zoo model with random weights at ``size`` (H, W) -> (drop-in, heatmap int8) paths."""
    # lazy: TensorFlow and the converter only for --model; timing given files needs LiteRT only
    import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
    from fptflite.models import build_model
    from fptflite.serving import android, dropin_build
    from fptflite.tflite import convert as convert_lib

    body = build_model(name, size)
    calib = np.random.default_rng(0).uniform(0, 255, (num_calibration, *size, 3))
    calib = calib.astype(np.float32)
    paths = (os.path.join(out_dir, android.DROPIN_FILENAME),
             os.path.join(out_dir, android.HEATMAP_FILENAME))
    for path, data in zip(paths, (dropin_build.convert_dropin(body, "ptq", calib),
                                  convert_lib.convert(body, "int8_ptq", calib)), strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        if _MODEL.value:
            print(f"{_MODEL.value} at {_INPUT_SIZE.value} with RANDOM "
                  "weights (PTQ on random crops): latency only", flush=True)
            dropin, heatmap = convert_random_body(_MODEL.value, cli.parse_hw(_INPUT_SIZE.value),
                                                  _NUM_CALIB.value, tmp)
        elif _DROPIN.value and _HEATMAP.value:
            dropin, heatmap = _DROPIN.value, _HEATMAP.value
        else:
            raise app.UsageError("give --dropin and --heatmap, or --model")
        rows = [compare_latency(dropin, heatmap, int(t), _RUNS.value, _ROUNDS.value)
                for t in _THREADS.value]
    print("| threads | heatmap int8 (ms) | drop-in with decode (ms) | decode adds |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['reference_ms']:.3f} | {r['ms']:.3f} | "
              f"{100 * r['overhead']:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
