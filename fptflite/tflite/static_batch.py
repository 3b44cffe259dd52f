"""The batch dimension of a .tflite's shape signature: read it, and fix it to 1 (TensorFlow-free).

The converter writes a Keras model's unknown batch as -1 in each tensor's ``shape_signature``
(its ``shape`` holds 1). Runtimes that take the signature literally refuse such a file or a
batch-1 tensor for it: LiteRT.js ("TensorBuffer ranked tensor type UInt8[1, 128, 128, 3]
does not match expected ranked tensor type UInt8[-1, 128, 128, 3]"), and LiteRT's GPU
accelerator compiles no graph with dynamic-sized tensors. ``static_batch_copy`` writes a copy
whose signatures equal the shapes the file was converted with (batch 1): the same ops and
weights, only the -1 entries rewritten in place in the flatbuffer. A graph whose ops compute
shapes from the batch (SHAPE / STRIDED_SLICE / PACK before a TRANSPOSE_CONV) keeps those ops;
they then compute the batch-1 shape.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema


def _tensors(buf: bytearray):
    model = schema.Model.GetRootAs(buf, 0)
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for t in range(graph.TensorsLength()):
            yield s, t, graph, graph.Tensors(t)


def input_signatures(data: bytes) -> list[list[int]]:
    """The first subgraph's input shape signatures (-1 = dynamic), e.g. [[-1, 128, 128, 3]]."""
    buf = bytearray(data)
    graph = schema.Model.GetRootAs(buf, 0).Subgraphs(0)
    out = []
    for i in range(graph.InputsLength()):
        tensor = graph.Tensors(graph.Inputs(i))
        sig = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else \
            tensor.ShapeAsNumpy()
        out.append([int(d) for d in np.atleast_1d(sig)])
    return out


def has_dynamic_batch(data: bytes) -> bool:
    """Whether any input's shape signature has a -1 batch (first) dimension."""
    return any(sig and sig[0] == -1 for sig in input_signatures(data))


def static_batch_copy(data: bytes) -> bytes:
    """A copy of a .tflite whose every shape signature equals its shape (batch 1).

    Args:
        data: the .tflite bytes.

    Returns:
        The edited bytes (the same length: only signature entries change). A file without -1
        entries comes back unchanged.

    Raises:
        ValueError: a -1 signature entry whose shape entry is not a fixed size >= 1.
    """
    buf = bytearray(data)
    for s, t, _, tensor in _tensors(buf):
        if not tensor.ShapeSignatureLength():
            continue
        sig = tensor.ShapeSignatureAsNumpy()  # a writable view into ``buf``
        shape = tensor.ShapeAsNumpy()
        dynamic = np.flatnonzero(sig == -1)
        if not len(dynamic):
            continue
        if len(np.atleast_1d(shape)) != len(sig) or (shape[dynamic] < 1).any():
            raise ValueError(f"tensor {t} of subgraph {s} ({tensor.Name().decode()}): "
                             f"signature {sig.tolist()} has no fixed shape to take "
                             f"(shape {np.atleast_1d(shape).tolist()})")
        sig[dynamic] = shape[dynamic]
    return bytes(buf)
