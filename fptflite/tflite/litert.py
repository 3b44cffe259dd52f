"""The one place that opens .tflite files: LiteRT interpreters, the op list, dequantization and
the converter's tensor names.

Imports numpy, ``ai_edge_litert`` and ``flatbuffers`` only, never TensorFlow, so code that only
runs .tflite files can use it. The op list is read from the file's flatbuffer with the schema
classes ``ai_edge_litert`` ships (``schema_py_generated``): the interpreter's public API has no
op list.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of a .tflite
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items()
                  if not name.startswith("_")}
_QUANTIZED_8BIT = (np.int8, np.uint8)


@dataclasses.dataclass(frozen=True)
class Op:
    """One operator of a .tflite's main subgraph.

    Attributes:
        name: the builtin op's schema name ("CONV_2D", "DEQUANTIZE", "DEPTH_TO_SPACE"), or a
            custom op's custom code ("FlexConv2D"; "CUSTOM" when it has none): the names the
            LiteRT interpreter gives its nodes.
        inputs: indices of the tensors the op reads (-1: an omitted optional input).
        outputs: indices of the tensors the op writes.
    """

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _check_identifier(head: bytes, source: str) -> None:
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"{source} is not a TFLite flatbuffer (no TFL3 identifier)")


def _check_file(model_path: str) -> None:
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"TFLite file not found: {model_path}")
    with open(model_path, "rb") as f:
        _check_identifier(f.read(8), model_path)


def load_interpreter(model_path: str | None = None, model_content: bytes | None = None,
                     num_threads: int | None = None, delegates: bool = True,
                     preserve_all_tensors: bool = False) -> Interpreter:
    """A LiteRT interpreter with its tensors allocated, from a file or its bytes.

    Args:
        model_path: a .tflite file (or give ``model_content``).
        model_content: the bytes of a .tflite.
        num_threads: CPU threads (None: LiteRT's default).
        delegates: False runs the builtin kernels only, without the default XNNPACK delegate
            (what the op audits inspect: one interpreter node per op of the file).
        preserve_all_tensors: keep every intermediate tensor readable after ``invoke`` (for
            layer-by-layer comparisons; more memory).

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        ValueError: the file is not a TFLite flatbuffer or LiteRT cannot load it (naming the
            file and LiteRT's message).
    """
    source = model_path or "<bytes>"
    if model_path is not None:
        _check_file(model_path)
    kwargs = {"num_threads": num_threads}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if not delegates:
        kwargs["experimental_op_resolver_type"] = \
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_path=model_path, model_content=model_content, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{source} cannot be loaded by the LiteRT interpreter: {e}") from e
    return interpreter


def _op_name(code: schema.OperatorCode) -> str:
    # Old files hold the code in the int8 deprecated field only; codes >= 127 are in the int32
    # field (the deprecated one then says 127): the code is the larger of the two.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        return custom.decode() if custom else "CUSTOM"
    return _BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _indices(values) -> tuple[int, ...]:
    # The generated accessors return 0 instead of an array for an absent vector.
    return tuple(int(i) for i in values) if isinstance(values, np.ndarray) else ()


def list_ops(model_path: str | None = None, model_content: bytes | None = None) -> list[Op]:
    """The ops of a .tflite's main subgraph in execution order, read from its flatbuffer.

    Tensor indices are those of a LiteRT interpreter of the same file (``get_tensor_details``
    and ``get_tensor``).

    Raises:
        FileNotFoundError: ``model_path`` does not exist.
        ValueError: the data is not a TFLite flatbuffer or has no subgraph.
    """
    source = model_path or "<bytes>"
    if model_path is not None:
        _check_file(model_path)
        with open(model_path, "rb") as f:
            model_content = f.read()
    _check_identifier(model_content[:8], source)
    model = schema.Model.GetRootAs(model_content, 0)
    if model.SubgraphsLength() == 0:
        raise ValueError(f"{source} has no subgraph")
    names = [_op_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        ops.append(Op(names[op.OpcodeIndex()], _indices(op.InputsAsNumpy()),
                      _indices(op.OutputsAsNumpy())))
    return ops


def min_runtime_version(model_path: str) -> str | None:
    """The ``min_runtime_version`` the converter writes into a file's metadata (None where
    there is none). A lower bound from the converter's table of op versions: it skips op
    versions the table lacks, ignores custom and Flex ops, and is not rewritten when the
    flatbuffer is edited afterwards, so only running the file on a runtime proves it loads."""
    _check_file(model_path)
    with open(model_path, "rb") as f:
        model = schema.Model.GetRootAs(f.read(), 0)
    for i in range(model.MetadataLength()):
        meta = model.Metadata(i)
        if meta.Name() == b"min_runtime_version":
            data = model.Buffers(meta.Buffer()).DataAsNumpy()
            return bytes(data).split(b"\0", 1)[0].decode() if len(data) else None
    return None


def tensor_details(interpreter: Interpreter) -> dict[int, dict]:
    """``interpreter.get_tensor_details()`` keyed by tensor index."""
    return {int(t["index"]): t for t in interpreter.get_tensor_details()}


def dequantize(values: np.ndarray, scale: float, zero_point: int,
               dtype: type[np.floating] = np.float32) -> np.ndarray:
    """``(values - zero_point) * scale`` computed in ``dtype``, as TFLite's DEQUANTIZE.

    Args:
        values: quantized integers [...] (a float array is only cast to ``dtype``: a float
            tensor's quantization parameters are (0.0, 0)).
        scale: the tensor's scale.
        zero_point: the tensor's zero point.
        dtype: the float type of the result and of the arithmetic.

    Returns:
        The real values [...] in ``dtype``.
    """
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(dtype)
    return (values.astype(dtype) - zero_point) * dtype(scale)


def read_dequantized(interpreter: Interpreter, index: int,
                     dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Tensor ``index`` of ``interpreter`` (after ``invoke``, or a constant) dequantized with
    its own scale and zero point, in ``dtype`` and the tensor's shape."""
    scale, zero_point = tensor_details(interpreter)[index]["quantization"]
    return dequantize(interpreter.get_tensor(index), scale, zero_point, dtype)


def keras_layer_of_tensor(name: str) -> str | None:
    """The Keras layer name the converter wrote into a tensor name, or None.

    The converter names a tensor after the op that produced it, "model/layer/op" with fused
    ops joined by ";" ("model/quant_block_2_add/add", "model/quant_Conv1_relu/Relu6;..." for
    a fused conv, BN and ReLU): the layer is the second path segment of the first name.
    """
    parts = name.split(";")[0].split("/")
    return parts[1] if len(parts) >= 2 else None


def quantized_layer_outputs(interpreter: Interpreter,
                            layer_shapes: Mapping[str, Sequence[int]]
                            ) -> dict[str, tuple[int, float, int]]:
    """The 8-bit tensors holding Keras layers' outputs.

    Args:
        interpreter: an interpreter of a file converted from the Keras model.
        layer_shapes: Keras layer name -> the output shape to find, batch included (weights
            have other shapes and biases are int32, so they do not match).

    Returns:
        Layer name -> (tensor index, scale, zero point) of the first int8/uint8 tensor with a
        quantization scale that the converter named after that layer and that has that shape;
        layers without one are left out.
    """
    found: dict[str, tuple[int, float, int]] = {}
    for t in interpreter.get_tensor_details():
        name = keras_layer_of_tensor(t["name"])
        scale, zero = t["quantization"]
        if (name not in layer_shapes or name in found or t["dtype"] not in _QUANTIZED_8BIT
                or scale <= 0):
            continue
        if [int(d) for d in t["shape"]] == list(layer_shapes[name]):
            found[name] = (int(t["index"]), float(scale), int(zero))
    return found
