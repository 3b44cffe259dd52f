"""Latency of the Android drop-in (in-graph decode) vs the same body's heatmap-output int8 file.

    flock /tmp/team/cpu.lock python -m benchmarks.android_latency \
        --dropin=android_demo_assets/fasterpose_singlepose.tflite \
        --heatmap=runs/demo/tflite/fasterpose_singlepose_heatmaps.tflite --threads=2,4

LiteRT interpreter with XNNPACK on the CPU, one image, both files timed alternately in the same
run (``rounds`` x ``runs`` invocations each after warm-up); prints a table with the decode's
share. The drop-in file's decode is what the app no longer runs in Kotlin.
"""

import sys

import numpy as np
from absl import app, flags

from fptflite.tflite.benchmark import time_tflite

_DROPIN = flags.DEFINE_string("dropin", None, "The drop-in .tflite (keypoint output).")
_HEATMAP = flags.DEFINE_string("heatmap", None, "The same body's heatmap-output int8 .tflite.")
_THREADS = flags.DEFINE_list("threads", ["2", "4"], "Thread counts.")
_RUNS = flags.DEFINE_integer("runs", 50, "Timed invocations per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Alternating rounds per file.")
flags.mark_flags_as_required(["dropin", "heatmap"])


def measure(dropin: str, heatmap: str, threads: int, runs: int, rounds: int) -> dict:
    """Median ms of each file over ``rounds`` alternating rounds of ``runs`` invocations."""
    samples = {"heatmap": [], "dropin": []}
    for _ in range(rounds):
        for key, path in (("heatmap", heatmap), ("dropin", dropin)):
            samples[key].append(time_tflite(path, threads, warmup=5, runs=runs))
    med = {k: float(np.median(np.concatenate(v))) for k, v in samples.items()}
    return {"threads": threads, **{f"{k}_ms": v for k, v in med.items()},
            "overhead": med["dropin"] / med["heatmap"] - 1}


def main(argv):
    del argv
    rows = [measure(_DROPIN.value, _HEATMAP.value, int(t), _RUNS.value, _ROUNDS.value)
            for t in _THREADS.value]
    print("| threads | heatmap int8 (ms) | drop-in with decode (ms) | decode adds |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['threads']} | {r['heatmap_ms']:.3f} | {r['dropin_ms']:.3f} | "
              f"{100 * r['overhead']:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
