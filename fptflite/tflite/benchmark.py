"""Single-image latency of .tflite files with the LiteRT interpreter (XNNPACK, CPU)."""

from __future__ import annotations

import time

import numpy as np

from fptflite.tflite.audit import load_interpreter


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


def summarize_ms(samples: np.ndarray) -> dict:
    return {"median_ms": float(np.median(samples)), "p10_ms": float(np.percentile(samples, 10)),
            "p90_ms": float(np.percentile(samples, 90)), "runs": int(len(samples))}
