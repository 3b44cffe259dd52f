"""The runtimes a .tflite meets on a phone, behind one interface (TensorFlow-free).

    cpu            LiteRT's interpreter with its default XNNPACK delegate (the default).
    cpu_reference  LiteRT's builtin kernels without XNNPACK (TFLite's own int8 kernels, what a
                   CPU without XNNPACK's int8 path runs).
    gpu            LiteRT's GPU accelerator (``CompiledModel`` with the WebGPU accelerator the
                   wheel ships), in a worker process: it crashes a process that has loaded
                   TensorFlow. An int8 file runs in float on dequantized weights (fp16 by
                   default, as on most phones). Without a GPU it runs on Mesa's lavapipe
                   Vulkan driver (``mesa-vulkan-drivers`` >= 25): its numbers are the GPU's
                   arithmetic, its speed means nothing. Batch 1 only (a resized GPU model
                   computes garbage without raising), so batches are looped.
    tflite2.14     TensorFlow Lite 2.14 (``tflite-runtime==2.14.0``, the Android pose sample's
                   era), in a worker process of its own virtual environment (it needs
                   ``numpy<2``), which ``make runtimes`` creates under ``runtimes_dir()``;
                   missing, it raises ``RuntimeNotInstalled`` (nothing installs at run time).
    web, web_gpu   LiteRT.js (wasm / WebGPU) in headless Chromium through a node worker
                   (``web_runtime.py``), which ``make web`` installs; missing, likewise.

``open_session(name, path, num_threads)`` gives a ``Session``: the input and output tensors'
shape, dtype and quantization, and ``run(x)`` on raw (quantized) arrays [B, ...]. A runtime
that cannot start raises ``RuntimeUnavailable`` naming the runtime, the file and the reason.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Protocol

import numpy as np

from fptflite.tflite.litert import load_interpreter

RUNTIMES = ("cpu", "cpu_reference", "gpu", "tflite2.14", "web", "web_gpu")
_HERE = os.path.dirname(os.path.abspath(__file__))
_WORKER_214 = os.path.join(_HERE, "tflite214_worker.py")
_WORKER_GPU = os.path.join(_HERE, "gpu_worker.py")


class RuntimeUnavailable(RuntimeError):
    """A runtime that cannot run here or cannot load the file (the message says why)."""


class RuntimeNotInstalled(RuntimeUnavailable):
    """A runtime whose own environment is not installed here (the message names the make
    target that installs it): not a fault of the file."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: shape (batch first), dtype, (scale, zero point)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    quantization: tuple[float, int]


class Session(Protocol):
    runtime: str
    input: TensorSpec
    output: TensorSpec

    def run(self, x: np.ndarray) -> np.ndarray:
        """Raw output [B, ...] of raw input [B, ...] (the tensors' own dtypes)."""


def _spec(detail: dict) -> TensorSpec:
    scale, zero = detail["quantization"]
    return TensorSpec(tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]),
                      (float(scale), int(zero)))


class InterpreterSession:
    """LiteRT's interpreter (``cpu``: with XNNPACK; ``cpu_reference``: builtin kernels)."""

    def __init__(self, runtime: str, path: str, num_threads: int | None = None,
                 preserve_all_tensors: bool = False):
        self.runtime = runtime
        self.interpreter = load_interpreter(path, num_threads=num_threads,
                                            delegates=runtime == "cpu",
                                            preserve_all_tensors=preserve_all_tensors)
        self._single_io(path)
        self.input = _spec(self.interpreter.get_input_details()[0])
        self.output = _spec(self.interpreter.get_output_details()[0])
        self._batch = self.input.shape[0]

    def _single_io(self, path: str) -> None:
        if len(self.interpreter.get_input_details()) != 1 or \
                len(self.interpreter.get_output_details()) != 1:
            raise ValueError(f"{path}: expected one input and one output tensor")

    def run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self._batch:
            index = self.interpreter.get_input_details()[0]["index"]
            self.interpreter.resize_tensor_input(index, [len(x), *self.input.shape[1:]])
            self.interpreter.allocate_tensors()
            self._batch = len(x)
        self.interpreter.set_tensor(self.interpreter.get_input_details()[0]["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.interpreter.get_output_details()[0]["index"])


def read_npy(stream) -> np.ndarray:
    """One .npy array from a pipe (``np.load`` needs a seekable file).

    Raises:
        EOFError: at the end of the stream.
    """
    magic = stream.read(8)  # \x93NUMPY, major, minor
    if len(magic) < 8:
        raise EOFError("end of stream")
    length_size = 2 if magic[6] == 1 else 4
    header_len = int.from_bytes(stream.read(length_size), "little")
    header = ast.literal_eval(stream.read(header_len).decode("latin1"))
    dtype, shape = np.dtype(header["descr"]), tuple(header["shape"])
    count = int(np.prod(shape))
    data = stream.read(count * dtype.itemsize)
    order = "F" if header["fortran_order"] else "C"
    return np.frombuffer(data, dtype, count).reshape(shape, order=order)


def runtimes_dir() -> str:
    """Where runtimes with their own environment live: ``$FPTFLITE_RUNTIMES_DIR``, else
    ``.runtimes`` beside the package (the checkout, for the editable install)."""
    default = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           os.pardir, ".runtimes")
    return os.path.abspath(os.environ.get("FPTFLITE_RUNTIMES_DIR", default))


def tflite214_python() -> str:
    """The TensorFlow Lite 2.14 environment's python (``make runtimes`` creates it).

    Raises:
        RuntimeNotInstalled: the environment is missing or unfinished; nothing is installed
            at run time.
    """
    venv = os.path.join(runtimes_dir(), "tflite2.14")
    python = os.path.join(venv, "bin", "python")
    if os.path.isfile(python) and os.path.isfile(os.path.join(venv, ".complete")):
        return python
    raise RuntimeNotInstalled(f"TensorFlow Lite 2.14 environment missing ({venv}): "
                              "make runtimes")


class WorkerSession:
    """A runtime in a worker process of its own (it must not share a process with
    TensorFlow): batches go to it as .npy over a pipe, outputs come back the same way.

    The worker writes, once loaded, the input's and the output's [scale, zero point, *shape]
    and an empty array of each one's dtype; or a string array with its load error.
    """

    def __init__(self, runtime: str, cmd: list[str], path: str):
        self.runtime, self._path = runtime, path
        self._log = tempfile.TemporaryFile()  # the runtimes log much; a pipe could fill up
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._log)
        first = self._read()
        if first.dtype.kind == "U":
            raise RuntimeUnavailable(f"{runtime} cannot load {path}: {first.item()}")
        in_row, out_row = first, self._read()
        self.input = self._spec(in_row, self._read().dtype)
        self.output = self._spec(out_row, self._read().dtype)

    @staticmethod
    def _spec(row: np.ndarray, dtype: np.dtype) -> TensorSpec:
        return TensorSpec(tuple(int(d) for d in row[2:]), np.dtype(dtype),
                          (float(row[0]), int(row[1])))

    def _read(self) -> np.ndarray:
        try:
            return read_npy(self._proc.stdout)
        except (EOFError, ValueError) as e:
            self._proc.wait(timeout=30)
            self._log.seek(0)
            tail = self._log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeUnavailable(
                f"{self.runtime}: its worker for {self._path} ended (exit "
                f"{self._proc.returncode}): {' | '.join(tail) or e}") from e

    def log_lines(self) -> list[str]:
        """What the worker has written to its log (stderr) so far, line by line."""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        self._log.seek(0, io.SEEK_END)
        return text.splitlines()

    def run(self, x: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(x, self.input.dtype))
        self._proc.stdin.write(buf.getvalue())
        self._proc.stdin.flush()
        out = self._read()
        if out.dtype.kind == "U":
            raise RuntimeError(f"{self.runtime} failed to run {self._path}: {out.item()}")
        return out

    def close(self) -> None:
        """Ends the worker (its input closed, it exits); also done when the session goes."""
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)

    def __del__(self):
        self.close()


class Tflite214Session(WorkerSession):
    """TensorFlow Lite 2.14 (``tflite214_worker.py`` with the 2.14 environment's python)."""

    def __init__(self, path: str, num_threads: int | None = None):
        cmd = [tflite214_python(), _WORKER_214, os.path.abspath(path), str(num_threads or 0)]
        super().__init__("tflite2.14", cmd, path)


class GpuSession(WorkerSession):
    """LiteRT's GPU accelerator (``gpu_worker.py``: ``CompiledModel``, one crop per run)."""

    def __init__(self, path: str, num_threads: int | None = None):
        del num_threads  # the GPU has no thread count
        super().__init__("gpu", [sys.executable, _WORKER_GPU, os.path.abspath(path)], path)


# Lines of the accelerator's log that say why a compilation failed (the rest is noise such as
# plugins that are not installed).
_FAILURE_WORDS = ("Error", "error", "Failed to", "dynamic-sized", "not supported")


def gpu_residency(path: str) -> dict:
    """Whether every op of ``path`` runs on LiteRT's GPU accelerator (compiled for the GPU
    alone, in a worker process), and where not, what its log says of the ops left over.

    Returns:
        {"checked": True, "fully_accelerated": bool, "cpu_ops_log": [log lines]} or
        {"checked": False, "reason": why the GPU accelerator could not run here}.
    """
    done = subprocess.run([sys.executable, _WORKER_GPU, os.path.abspath(path), "--residency"],
                          capture_output=True, text=True, timeout=600)
    answer = done.stdout.strip().splitlines()[-1:] or [""]
    if done.returncode or answer[0] not in ("full", "partial"):
        why = [ln.strip() for ln in done.stderr.splitlines()
               if any(w in ln for w in _FAILURE_WORDS) and not ln.startswith("INFO:")]
        return {"checked": False, "reason": f"gpu: LiteRT's GPU accelerator cannot compile "
                                            f"{path}: {' | '.join(why[-3:]) or answer[0]}"}
    notes = [ln.strip() for ln in done.stderr.splitlines() if "operations will run on" in ln
             or "Max version supported" in ln]
    return {"checked": True, "fully_accelerated": answer[0] == "full",
            "cpu_ops_log": notes[:20]}


_OPENERS: dict[str, Callable[..., Session]] = {
    "cpu": lambda path, threads: InterpreterSession("cpu", path, threads),
    "cpu_reference": lambda path, threads: InterpreterSession("cpu_reference", path, threads),
    "gpu": GpuSession,
    "tflite2.14": Tflite214Session,
}


# The browser runtimes: web (LiteRT.js on wasm) and web_gpu (LiteRT.js on WebGPU) in headless
# Chromium, through a node worker (``fptflite.tflite.web_runtime``; ``make web`` installs it).
def _web_opener(runtime: str) -> Callable[..., Session]:
    def open_web(path: str, num_threads: int | None) -> Session:
        # Imported here: web_runtime builds on this module's WorkerSession.
        from fptflite.tflite.web_runtime import WebSession
        return WebSession(path, num_threads, runtime)
    return open_web


_OPENERS.update({"web": _web_opener("web"), "web_gpu": _web_opener("web_gpu")})


def open_session(runtime: str, path: str, num_threads: int | None = None) -> Session:
    """A session of ``path`` on ``runtime`` (one of ``RUNTIMES``).

    Raises:
        ValueError: an unknown runtime name.
        RuntimeUnavailable: the runtime cannot start here or cannot load the file.
    """
    if runtime not in _OPENERS:
        raise ValueError(f"unknown runtime {runtime!r}; one of {RUNTIMES}")
    return _OPENERS[runtime](path, num_threads)
