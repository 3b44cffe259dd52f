"""Worker that runs one .tflite on LiteRT's GPU accelerator (``CompiledModel``).

Started by ``fptflite.tflite.runtimes`` with the project's python, in a process of its own:
the accelerator crashes a process that has loaded TensorFlow. Imports numpy, LiteRT and the
TensorFlow-free ``runtimes`` module only::

    python gpu_worker.py MODEL.tflite              # serve batches (runtimes.WorkerSession)
    python gpu_worker.py MODEL.tflite --residency  # print "full" or "partial"

Serving: on stdout the input's and the output's [scale, zero point, *shape], an empty array
of each one's dtype (or a string array with the load error), then one raw output [B, ...]
per .npy batch read from stdin, one crop per accelerator run (a GPU model resized to a batch
computes garbage without raising). Ends at the end of stdin.
"""

import io
import os
import sys

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.hardware_accelerator import HardwareAccelerator

from fptflite.tflite.runtimes import InterpreterSession, read_npy

# The .npy protocol gets the real stdout; native code logs to stdout too, so from here on
# file descriptor 1 points at stderr.
_PROTOCOL = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)


def _write(array) -> None:
    buf = io.BytesIO()  # a pipe has no file position, which ndarray.tofile needs
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    _PROTOCOL.write(buf.getvalue())
    _PROTOCOL.flush()


def residency(path: str) -> int:
    """Compiles for the GPU alone: it fails when some op would stay on the CPU."""
    CompiledModel.from_file(path,  # raises when the accelerator cannot start at all
                            hardware_accel=HardwareAccelerator.GPU | HardwareAccelerator.CPU)
    try:
        CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
    except RuntimeError:
        _PROTOCOL.write(b"partial\n")
        return 0
    _PROTOCOL.write(b"full\n")
    return 0


def serve(path: str) -> int:
    spec = InterpreterSession("cpu_reference", path)  # the tensors' shapes and quantization
    try:
        model = CompiledModel.from_file(
            path, hardware_accel=HardwareAccelerator.GPU | HardwareAccelerator.CPU)
        inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)
    except Exception as e:  # the wrapper raises RuntimeError or ValueError
        _write(np.array(f"{type(e).__name__}: {e}"))
        return 2
    for t in (spec.input, spec.output):
        _write(np.array([*t.quantization, *t.shape], np.float64))
    _write(np.empty(0, spec.input.dtype))
    _write(np.empty(0, spec.output.dtype))
    size = int(np.prod(spec.output.shape[1:]))
    while True:
        try:
            x = read_npy(sys.stdin.buffer)
        except EOFError:  # the parent closed the pipe
            return 0
        out = np.empty((len(x), *spec.output.shape[1:]), spec.output.dtype)
        for i, crop in enumerate(x):
            inputs[0].write(np.ascontiguousarray(crop[None]))
            model.run_by_index(0, inputs, outputs)
            out[i] = outputs[0].read(size, spec.output.dtype).reshape(out.shape[1:])
        _write(out)


if __name__ == "__main__":
    sys.exit(residency(sys.argv[1]) if "--residency" in sys.argv else serve(sys.argv[1]))
