"""Worker that runs one .tflite on TensorFlow Lite 2.14 (``tflite-runtime==2.14.0``).

Started by ``fptflite.tflite.runtimes`` with the 2.14 environment's python (numpy<2,
tflite_runtime; nothing of the project is imported)::

    python tflite214_worker.py MODEL.tflite NUM_THREADS

Protocol on stdout, .npy arrays one after the other: on start either one string array (the
load error) and exit, or four arrays: the input's and the output's [scale, zero point,
*shape] (float64) and an empty array of each one's dtype. Then, for every .npy batch
[B, ...] read from stdin, the raw output [B, ...] (or a string array with the error). Ends at
the end of stdin.
"""

import ast
import io
import os
import sys

import numpy as np
from tflite_runtime.interpreter import Interpreter


def read_npy(stream):
    """One .npy array from a pipe (the twin of ``runtimes.read_npy``: this worker imports
    nothing of the project)."""
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


# The .npy protocol gets the real stdout; native code logs to stdout too, so from here on
# file descriptor 1 points at stderr.
_PROTOCOL = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)


def _write(array):
    buf = io.BytesIO()  # a pipe has no file position, which ndarray.tofile needs
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    _PROTOCOL.write(buf.getvalue())
    _PROTOCOL.flush()


def _spec(detail):
    scale, zero = detail["quantization"]
    return np.array([scale, zero, *detail["shape"]], np.float64)


def main(path, num_threads):
    try:
        interp = Interpreter(model_path=path, num_threads=num_threads or None)
        interp.allocate_tensors()
    except Exception as e:  # ValueError/RuntimeError: "Didn't find op for builtin opcode ..."
        _write(np.array(f"{type(e).__name__}: {e}"))
        return 2
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    for item in (_spec(inp), _spec(out), np.empty(0, inp["dtype"]),
                 np.empty(0, out["dtype"])):
        _write(item)
    batch = int(inp["shape"][0])
    while True:
        try:
            x = read_npy(sys.stdin.buffer)
        except EOFError:  # the parent closed the pipe
            return 0
        try:
            if len(x) != batch:
                interp.resize_tensor_input(inp["index"], list(x.shape))
                interp.allocate_tensors()
                batch = len(x)
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            _write(interp.get_tensor(out["index"]))
        except Exception as e:  # report to the parent, which raises with the file's name
            _write(np.array(f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
