"""Single-image latency of .tflite files with the LiteRT interpreter (XNNPACK, CPU)."""

from __future__ import annotations

import time

import numpy as np

from fptflite.tflite.litert import load_interpreter


def time_tflite(path: str, num_threads: int, warmup: int = 5, runs: int = 30,
                seed: int = 0) -> np.ndarray:
    """Milliseconds of ``runs`` invocations on one random image, after ``warmup`` runs."""
    interp = load_interpreter(path, num_threads=num_threads)
    inp = interp.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if inp["dtype"] == np.float32:
        x = rng.uniform(0, 255, inp["shape"]).astype(np.float32)
    else:
        info = np.iinfo(inp["dtype"])
        x = rng.integers(info.min, info.max + 1, inp["shape"]).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    for _ in range(warmup):
        interp.invoke()
    out = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        interp.invoke()
        out[i] = (time.perf_counter() - t) * 1000
    return out


def compare_latency(path: str, reference: str, num_threads: int, runs: int = 50,
                    rounds: int = 4) -> dict:
    """Median ms of two files timed alternately (``rounds`` x ``runs`` invocations each, the
    reference first in every round), so that a change in machine speed during the
    measurement affects both alike.

    Returns:
        {"threads", "ms" (``path``), "reference_ms", "overhead" (ms / reference_ms - 1)}.
    """
    samples = {"ms": [], "reference_ms": []}
    for _ in range(rounds):
        for key, file in (("reference_ms", reference), ("ms", path)):
            samples[key].append(time_tflite(file, num_threads, warmup=5, runs=runs))
    med = {k: float(np.median(np.concatenate(v))) for k, v in samples.items()}
    return {"threads": num_threads, **med, "overhead": med["ms"] / med["reference_ms"] - 1}


def summarize_ms(samples: np.ndarray) -> dict:
    return {"median_ms": float(np.median(samples)), "p10_ms": float(np.percentile(samples, 10)),
            "p90_ms": float(np.percentile(samples, 90)), "runs": int(len(samples))}
