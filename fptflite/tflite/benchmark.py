"""Single-image latency of .tflite files on a runtime (default: LiteRT with XNNPACK, CPU)."""

from __future__ import annotations

import time

import numpy as np

from fptflite.tflite import runtimes


def time_tflite(path: str, num_threads: int, warmup: int = 5, runs: int = 30,
                seed: int = 0, runtime: str = "cpu") -> np.ndarray:
    """Milliseconds of ``runs`` invocations on one random image, after ``warmup`` runs.

    On the interpreter runtimes ("cpu", "cpu_reference") an invocation is ``invoke()``; on
    the worker runtimes ("gpu", "tflite2.14") a whole ``run`` through the worker's pipe (on
    lavapipe a GPU time says nothing about a phone's GPU).
    """
    session = runtimes.open_session(runtime, path, num_threads)
    spec = session.input
    rng = np.random.default_rng(seed)
    if spec.dtype == np.float32:
        x = rng.uniform(0, 255, spec.shape).astype(np.float32)
    else:
        info = np.iinfo(spec.dtype)
        x = rng.integers(info.min, info.max + 1, spec.shape).astype(spec.dtype)
    if isinstance(session, runtimes.InterpreterSession):
        interp = session.interpreter
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        invoke = interp.invoke
    else:
        def invoke():
            session.run(x)
    for _ in range(warmup):
        invoke()
    out = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        invoke()
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
