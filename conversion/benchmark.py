"""Latency of zoo models as .tflite on this CPU, side by side in one run.

    python -m conversion.benchmark [--models=...] [--formats=float32,float16,int8] \
        [--threads=1,2] [--runs=30] [--out_json=runs/latency.json]

Builds each model at --input_size with random weights (latency does not depend on the weight
values), converts it (int8 = full-integer PTQ calibrated on random crops), and times
single-image inference with the LiteRT interpreter (XNNPACK) after warm-up. Rounds over the
files are interleaved so that machine noise hits every file alike. Prints a table of medians
and p10-p90 spreads, and ratios FasterPose / SimpleBaseline and int8 / float32.
"""

import os
import sys
import tempfile

import numpy as np
from absl import app, flags

import fptflite  # noqa: F401  (selects tf_keras before TensorFlow loads)
from fptflite.models import build_model, count_macs
from fptflite.tflite import benchmark, convert, runtimes
from fptflite.utils import cli
from fptflite.utils.cli import parse_hw
from fptflite.utils.io import write_bytes_atomic, write_json_atomic
from fptflite.utils.progress import ProgressCounter

_MODELS = cli.flag("zoo_models", default=["fasterpose_r50", "simplebaseline_r50",
                                       "fasterpose_mnv2", "simplebaseline_mnv2"])
_FORMATS = cli.flag("formats", default=["float32", "float16", "int8_ptq"])
_THREADS = cli.flag("thread_counts")
_RUNTIME = cli.flag("runtime", enum_values=list(runtimes.RUNTIMES))
_INPUT = cli.flag("input_size", default="256x192")
_RUNS = cli.flag("runs", default=30)
_ROUNDS = cli.flag("rounds")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Warm-up runs.")
_OUT = cli.flag("out_json", default="runs/latency.json")
_KEEP = flags.DEFINE_string("tflite_dir", None, "Keep the .tflite files here.")


def main(argv):
    del argv
    size = parse_hw(_INPUT.value)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 255, (8, *size, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="fptflite_latency_") as tmp:
        return _run(size, calib, _KEEP.value or tmp)


def _run(size, calib, workdir) -> int:
    files, macs = {}, {}
    counter = ProgressCounter(len(_MODELS.value) * len(_FORMATS.value), "converting")
    for name in _MODELS.value:
        model = build_model(name, size)
        macs[name] = count_macs(model)
        for fmt in _FORMATS.value:
            data = convert.convert(model, fmt, calib if fmt.startswith("int8") else None)
            path = os.path.join(workdir, f"{name}_{fmt}.tflite")
            write_bytes_atomic(path, data)
            files[name, fmt] = path
            counter.update(1)
    threads = [int(t) for t in _THREADS.value]
    samples = {(k[0], k[1], t): [] for k in files for t in threads}
    per_round = max(_RUNS.value // _ROUNDS.value, 1)
    for r in range(_ROUNDS.value):
        for (name, fmt), path in files.items():
            for t in threads:
                samples[name, fmt, t].extend(benchmark.time_tflite(
                    path, t, _WARMUP.value if r == 0 else 2, per_round, seed=r,
                    runtime=_RUNTIME.value))
        print(f"timing round {r + 1}/{_ROUNDS.value} done", file=sys.stderr)
    rows = []
    for (name, fmt, t), s in samples.items():
        rows.append({"model": name, "format": fmt, "threads": t, "gmacs": macs[name] / 1e9,
                     "size_mb": os.path.getsize(files[name, fmt]) / 1e6,
                     **benchmark.summarize_ms(np.array(s))})
    med = {(r["model"], r["format"], r["threads"]): r["median_ms"] for r in rows}
    print(f"\nlatency, {size[0]}x{size[1]} input, LiteRT + XNNPACK, {os.cpu_count()} cores, "
          f"{_RUNS.value} runs each (median [p10-p90] ms)")
    print(f"{'model':<22}{'format':<9}{'GMACs':>7}{'MB':>7}" +
          "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>24}" for t in threads))
    for name in _MODELS.value:
        for fmt in _FORMATS.value:
            r0 = next(r for r in rows if r["model"] == name and r["format"] == fmt)
            cells = ""
            for t in threads:
                r = next(x for x in rows if x["model"] == name and x["format"] == fmt
                         and x["threads"] == t)
                cells += f"{r['median_ms']:>9.1f} [{r['p10_ms']:.1f}-{r['p90_ms']:.1f}]".rjust(24)
            print(f"{name:<22}{fmt:<9}{r0['gmacs']:>7.2f}{r0['size_mb']:>7.1f}{cells}")
    ratios = []
    for t in threads:
        for name in _MODELS.value:
            if "float32" in _FORMATS.value and "int8_ptq" in _FORMATS.value:
                ratios.append((f"{name} int8 / float32, {t} thr",
                               med[name, "int8_ptq", t] / med[name, "float32", t]))
        for fp, sb in (("fasterpose_r50", "simplebaseline_r50"),
                       ("fasterpose_mnv2", "simplebaseline_mnv2")):
            for fmt in _FORMATS.value:
                if (fp, fmt, t) in med and (sb, fmt, t) in med:
                    ratios.append((f"{fp} / {sb}, {fmt}, {t} thr",
                                   med[fp, fmt, t] / med[sb, fmt, t]))
    print("\nratios of medians (same run):")
    for label, v in ratios:
        print(f"  {label:<55} {v:.3f}")
    if _OUT.value:
        write_json_atomic(_OUT.value, {"input_size": list(size), "rows": rows,
                                       "ratios": dict(ratios)})
        print(f"\nwritten: {_OUT.value}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
