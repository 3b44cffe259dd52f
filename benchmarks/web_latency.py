"""Latency of the Android drop-in in the browser (LiteRT.js in headless Chromium) beside native
LiteRT.

    python -m benchmarks.web_latency [--model=android_demo_assets/fasterpose_singlepose.tflite]
        [--thread_counts=1,2] [--runs=50] [--rounds=4] [--out_json=docs/results/web_latency.json]

Native: LiteRT's interpreter with XNNPACK, one image, ``invoke()`` timed, for each thread
count. Browser: ``web/bench.html`` served with the model (``fptflite.serving.web_server``),
one page load that compiles the model for wasm with each thread count (LiteRT.js's threaded
build) and for WebGPU where the browser has an adapter, warms each up and times them in
alternating rounds; a browser time is a whole ``run`` (input copy, inference, output read
back), what the pose page spends per crop. On a machine without a GPU, WebGPU runs on Mesa's
lavapipe (Vulkan on the CPU): its time says nothing about a GPU. Needs ``make web`` and
Chromium. Writes a results file (kind "figures") for ``python -m benchmarks.report``.
"""

import os
import platform
import sys

import numpy as np
from absl import flags

from fptflite.serving import web_server
from fptflite.tflite.benchmark import summarize_ms, time_tflite
from fptflite.utils import cli
from fptflite.utils.io import write_json_atomic
from fptflite.utils.provenance import provenance

DEFAULT_DROPIN = "android_demo_assets/fasterpose_singlepose.tflite"
_MODEL = cli.flag("model", help_note=f"Here the drop-in .tflite, or a run directory (its "
                  f"drop-in); default {DEFAULT_DROPIN}.")
_THREADS = cli.flag("thread_counts")
_RUNS = cli.flag("runs")
_ROUNDS = cli.flag("rounds", default=4)
_WEBGPU = flags.DEFINE_bool("webgpu", True, "Also time WebGPU where the browser has it.")
_OUT = cli.flag("out_json", default="docs/results/web_latency.json")


def native_rows(path: str, threads: list[int], runs: int, rounds: int) -> list[dict]:
    """LiteRT + XNNPACK, thread counts alternating over ``rounds``."""
    samples = {n: [] for n in threads}
    for _ in range(rounds):
        for n in threads:
            samples[n].append(time_tflite(path, n, warmup=10, runs=runs))
    return [{"label": f"native LiteRT + XNNPACK, {n} thread{'s' if n > 1 else ''}",
             "runtime": "cpu", "threads": n, **summarize_ms(np.concatenate(samples[n]))}
            for n in threads]


def browser_rows(model: web_server.ServedModel, threads: list[int], runs: int, rounds: int,
                 webgpu: bool) -> dict:
    """``web/bench.html``'s result: {"settings": [...], "skipped": [...], ...}."""
    server, url = web_server.serve_in_thread(model)
    query = (f"threads={','.join(map(str, threads))}&runs={runs}&rounds={rounds}"
             f"&webgpu={int(webgpu)}")
    try:
        page = web_server.drive_page(
            f"{url}/bench.html?{query}", webgpu=webgpu, timeout=1800,
            wait="window.benchResult !== undefined || window.benchError !== undefined",
            result="window.benchResult || {error: window.benchError}")
    finally:
        server.shutdown()
        server.server_close()
    result = page["result"]
    if "error" in result:
        raise RuntimeError(f"bench.html failed: {result['error']}")
    return {**result, "browser": page["browser"]}


def main(argv):
    del argv
    threads = [int(t) for t in _THREADS.value]
    try:
        path, _ = web_server.find_dropin(_MODEL.value or DEFAULT_DROPIN)
        model = web_server.check_dropin(path)
    except web_server.ModelError as e:
        print(f"web_latency: {e}", file=sys.stderr)
        return 2
    native = native_rows(path, threads, _RUNS.value, _ROUNDS.value)
    browser = browser_rows(model, threads, _RUNS.value, _ROUNDS.value, _WEBGPU.value)
    rows = native + [{**s, "runtime": "web" if s["accelerator"] == "wasm" else "web_gpu"}
                     for s in browser["settings"]]
    size = model.input_size
    for r in rows:
        print(f"{r['label']:40s} median {r['median_ms']:7.3f} ms  p10 {r['p10_ms']:7.3f}  "
              f"p90 {r['p90_ms']:7.3f}  ({r['runs']} runs)")
    for s in browser["skipped"]:
        print(f"{s['label']}: not run: {s['reason']}")
    browser_name = browser["browser"].split("/")[-1]
    figures = [{"what": f"drop-in {size}x{size} ({os.path.basename(path)}), {r['label']}"
                        + ("" if r["runtime"] == "cpu" else
                           f", LiteRT.js in headless Chromium {browser_name}"),
                "figure": f"{r['median_ms']:.3f} ms median (p10 {r['p10_ms']:.3f}, "
                          f"p90 {r['p90_ms']:.3f}; {r['runs']} runs)",
                **r} for r in rows]
    figures += [{"what": f"drop-in {size}x{size}, {s['label']} in the browser",
                 "figure": f"not run: {s['reason']}"} for s in browser["skipped"]]
    prov = provenance(sys.argv)
    prov["note"] = (f"One page load for the browser rows (rounds alternate the settings); "
                    f"native timed just before in the same command. WebGPU on this machine is "
                    f"Mesa's lavapipe (CPU): its time says nothing about a GPU. Python "
                    f"{platform.python_version()}.")
    write_json_atomic(_OUT.value, {"kind": "figures",
                                   "title": "The drop-in in the browser (LiteRT.js) beside "
                                            "native LiteRT",
                                   "provenance": prov, "result": figures})
    print(f"wrote {_OUT.value}")
    return 0


if __name__ == "__main__":
    cli.run_tool(main)
