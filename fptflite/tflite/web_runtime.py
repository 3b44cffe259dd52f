"""The browser as a runtime: a .tflite in LiteRT.js (``@litertjs/core``) in headless Chromium.

    web       LiteRT.js on its XNNPACK/wasm CPU path (1 thread unless ``num_threads`` asks
              for more: the threaded build, which needs the cross-origin isolated page the
              worker serves).
    web_gpu   LiteRT.js on WebGPU (where the browser offers an adapter: on a machine without a
              GPU, Chromium on Mesa's lavapipe Vulkan driver; its speed means nothing). The
              JSPI build is loaded, so ops WebGPU lacks run on wasm (LiteRT.js's partitioning).

A ``WebSession`` is a ``WorkerSession``: ``web/litert_worker.mjs`` (node) serves ``web/`` and
the file on 127.0.0.1, drives the system Chromium through ``puppeteer-core`` and runs the
batches it is sent one item at a time. Nothing is installed at run time: Chromium comes from
Debian's package ``chromium`` (``.ci/run`` installs it), node packages from ``make web`` (pinned in
``web/package-lock.json``); when either is missing the session raises ``RuntimeUnavailable``
naming what is missing and ``make web``.

LiteRT.js checks a tensor against the input's shape *signature*: a file converted with a
dynamic batch ([-1, S, S, 3]) is refused ("TensorBuffer ranked tensor type UInt8[1, ...] does
not match expected ranked tensor type UInt8[-1, ...]"), and it has no call to resize an
input. Such a file runs here as a copy whose signatures are fixed to the converted shapes
(``fptflite.tflite.static_batch``), batch 1; ``WebSession.static_copy`` says so. LiteRT.js
tensors are float32, int32 or uint8: int8 inputs or outputs cannot be fed or read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from fptflite.tflite import runtimes, static_batch
from fptflite.tflite.runtimes import InterpreterSession, RuntimeUnavailable, WorkerSession

ACCELERATORS = {"web": "wasm", "web_gpu": "webgpu"}
# A missing install (not the file's fault): ``runtimes.RuntimeNotInstalled`` where that
# module defines it, else its parent ``RuntimeUnavailable``.
NotInstalled = getattr(runtimes, "RuntimeNotInstalled", RuntimeUnavailable)
_NODE_PACKAGES = ("@litertjs/core", "@litertjs/wasm-utils", "puppeteer-core")


def web_dir() -> str:
    """The web/ folder of the checkout (``$FPTFLITE_WEB_DIR`` overrides): package.json, the
    lock file, node_modules after ``make web``, the worker and the pages."""
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "web")
    return os.path.abspath(os.environ.get("FPTFLITE_WEB_DIR", default))


def chromium_path() -> str | None:
    """The system Chromium: ``$FPTFLITE_CHROMIUM`` (None if that file is missing), else
    ``chromium`` on PATH."""
    if os.environ.get("FPTFLITE_CHROMIUM"):
        path = os.environ["FPTFLITE_CHROMIUM"]
        return path if os.path.isfile(path) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> list[str]:
    """What the web runtimes lack here (empty when they can start): node, the node packages
    of ``make web``, Chromium."""
    lack = []
    if shutil.which("node") is None:
        lack.append("node (Debian package nodejs)")
    modules = os.path.join(web_dir(), "node_modules")
    lack += [f"node package {p} in {modules}" for p in _NODE_PACKAGES
             if not os.path.isfile(os.path.join(modules, p, "package.json"))]
    if chromium_path() is None:
        lack.append("Chromium (Debian package chromium, as .ci/run installs it)")
    return lack


def require_web(runtime: str) -> None:
    """Raises ``NotInstalled`` (a ``RuntimeUnavailable``) naming what is missing and the
    make target."""
    lack = missing()
    if lack:
        raise NotInstalled(f"{runtime}: missing {', '.join(lack)}: make web")


class WebSession(WorkerSession):
    """A .tflite in LiteRT.js in headless Chromium (``web/litert_worker.mjs``).

    Attributes:
        info: what the page reported after compiling: the accelerator the model really runs
            on (LiteRT.js falls back to wasm when WebGPU cannot take the model), whether it
            is fully accelerated, wasm threads, the inputs' and outputs' dtype and shape, the
            loaded build (threads, JSPI) and the browser's version.
        static_copy: the file had a dynamic batch and runs as a static batch-1 copy.
    """

    def __init__(self, path: str, num_threads: int | None = None, runtime: str = "web"):
        if runtime not in ACCELERATORS:
            raise ValueError(f"unknown web runtime {runtime!r}; one of {sorted(ACCELERATORS)}")
        require_web(runtime)
        self.runtime, self._path = runtime, path
        # LiteRT.js reports no quantization: the file's own specs come from LiteRT here.
        spec = InterpreterSession("cpu_reference", path)
        self._tmp = tempfile.TemporaryDirectory(prefix="fptflite-web-")
        with open(path, "rb") as f:
            data = f.read()
        self.static_copy = static_batch.has_dynamic_batch(data)
        model = os.path.abspath(path)
        if self.static_copy:
            model = os.path.join(self._tmp.name, "static_batch.tflite")
            with open(model, "wb") as f:
                f.write(static_batch.static_batch_copy(data))
        threads = 1 if num_threads is None else int(num_threads)
        cmd = ["node", os.path.join(web_dir(), "litert_worker.mjs"), model,
               ACCELERATORS[runtime], str(threads)]
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", self._tmp.name)  # Vulkan (WebGPU) wants one
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log, env=env, cwd=web_dir())
        first = self._read()
        if first.dtype.kind == "U":
            raise RuntimeUnavailable(f"{runtime} cannot load {path}: {first.item()}")
        self.info = json.loads(first.tobytes().decode())
        self.input, self.output = spec.input, spec.output
        self._check_info(path)

    def _check_info(self, path: str) -> None:
        ins, outs = self.info["inputs"], self.info["outputs"]
        if len(ins) != 1 or len(outs) != 1:
            raise RuntimeUnavailable(f"{self.runtime}: {path}: expected one input and one "
                                     f"output in LiteRT.js, got {len(ins)} and {len(outs)}")
        for name, got, want in (("input", ins[0], self.input), ("output", outs[0], self.output)):
            if tuple(got["shape"]) != want.shape or np.dtype(got["dtype"]) != want.dtype:
                raise RuntimeUnavailable(
                    f"{self.runtime}: {path}: LiteRT.js sees the {name} as {got['dtype']} "
                    f"{got['shape']}, LiteRT as {want.dtype} {list(want.shape)}")
        if self.runtime == "web_gpu" and self.info["accelerator"] != "webgpu":
            raise RuntimeUnavailable(f"web_gpu: LiteRT.js did not compile {path} for WebGPU "
                                     f"(it runs on {self.info['accelerator']})")

    def __del__(self):
        super().__del__()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()



# What LiteRT.js prints (page console, forwarded to the worker's log) while it partitions a
# model between WebGPU and wasm: TFLite's GPU delegate lists the ops it cannot take, one per
# line after this header, then counts both sides. ``isFullyAccelerated`` does not say it:
# measured on a batch-1 SimpleBaseline, it was true while the delegate put 4 of 67 ops on wasm.
_UNSUPPORTED_HEADER = "Following operations are not supported by GPU delegate"
_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) "
                    r"operations will run on the CPU")
_NONE_ON_GPU = re.compile(r"No operations will run on the GPU, and all (\d+) operations")


def residency_from_log(lines: list[str], fully_accelerated_flag: bool) -> dict:
    """Parses the GPU delegate's partition report out of LiteRT.js's log.

    Args:
        lines: the worker's log lines (page console lines carry a "[page <type>] " prefix).
        fully_accelerated_flag: ``CompiledModel.isFullyAccelerated``.

    Returns:
        {"checked": True, "fully_accelerated", "cpu_ops_log": the report's lines (the header,
        one line per op left off WebGPU, the counts), "gpu_ops", "cpu_ops" (None when the
        delegate printed no counts: every op on WebGPU)}.
    """
    text = [ln.split("] ", 1)[-1].strip() if ln.startswith("[page") else ln.strip()
            for ln in lines]
    report, inside, gpu_ops, cpu_ops = [], False, None, None
    for ln in text:
        split, none = _SPLIT.search(ln), _NONE_ON_GPU.search(ln)
        if _UNSUPPORTED_HEADER in ln:
            inside = True
        if inside and ln:
            report.append(ln)
        if split or none:
            gpu_ops, cpu_ops = (int(split[1]), int(split[2])) if split else (0, int(none[1]))
            inside = False
    return {"checked": True,
            "fully_accelerated": bool(fully_accelerated_flag) and not cpu_ops,
            "cpu_ops_log": report[:40], "gpu_ops": gpu_ops, "cpu_ops": cpu_ops}


def web_gpu_residency(path: str) -> dict:
    """Which ops of ``path`` LiteRT.js runs on WebGPU and which it leaves to wasm, from what
    the runtime prints while it compiles (``residency_from_log``).

    Returns:
        {"checked": True, "fully_accelerated", "cpu_ops_log", "gpu_ops", "cpu_ops"} or
        {"checked": False, "reason": why WebGPU could not be checked here}: the shape of
        ``runtimes.gpu_residency``'s answer for LiteRT's native GPU accelerator.
    """
    try:
        session = WebSession(path, runtime="web_gpu")
    except RuntimeUnavailable as e:
        return {"checked": False, "reason": str(e)}
    try:
        return residency_from_log(session.log_lines(), session.info["isFullyAccelerated"])
    finally:
        session.close()
