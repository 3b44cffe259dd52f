"""Sets the I/O of a selectively quantized .tflite to uint8 in, float32 out.

``QuantizationDebugger.get_nondebug_quantized_model`` with ``fully_quantize=True`` gives an
int8 input and an int8 output (a QUANTIZE after the float decode). The Android sample needs
a uint8 input and a float32 output, which is what the converter's
``inference_input_type``/``inference_output_type`` do for ordinary conversions; the debugger
has no such options, so this module applies the same edit to the flatbuffer with TFLite's
``flatbuffer_utils``: the final QUANTIZE is dropped (its float input becomes the output) and
a uint8 -> int8 QUANTIZE is put in front of the int8 input (same scale, zero point + 128, so
the same pixel values).
"""

from __future__ import annotations

import copy

from tensorflow.lite.python import schema_py_generated as schema_fb
from tensorflow.lite.tools import flatbuffer_utils

_QUANTIZE = schema_fb.BuiltinOperator.QUANTIZE


def _opcode_index(model, builtin: int) -> int:
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema_fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _retarget_signatures(model, kind: str, old: int, new: int) -> None:
    for sig in model.signatureDefs or []:
        for tensor_map in getattr(sig, kind) or []:
            if tensor_map.tensorIndex == old:
                tensor_map.tensorIndex = new


def uint8_input_float_output(data: bytes) -> bytes:
    """Returns the model with a uint8 input and a float32 output (see the module docstring).

    Raises:
        ValueError: the model does not have the int8-in / QUANTIZE-out structure expected.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    sg = model.subgraphs[0]
    if len(sg.inputs) != 1 or len(sg.outputs) != 1:
        raise ValueError("expected one input and one output")
    out = sg.outputs[0]
    producer = next(op for op in sg.operators if out in list(op.outputs))
    if sg.tensors[out].type == schema_fb.TensorType.INT8:
        code = model.operatorCodes[producer.opcodeIndex]
        src = producer.inputs[0]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != _QUANTIZE or \
                sg.tensors[src].type != schema_fb.TensorType.FLOAT32:
            raise ValueError("the int8 output is not a QUANTIZE of a float tensor")
        sg.operators.remove(producer)
        sg.outputs[0] = src
        _retarget_signatures(model, "outputs", out, src)
    inp = sg.inputs[0]
    t_int8 = sg.tensors[inp]
    if t_int8.type == schema_fb.TensorType.INT8:
        t_uint8 = copy.deepcopy(t_int8)
        t_uint8.type = schema_fb.TensorType.UINT8
        t_uint8.quantization.zeroPoint = [int(z) + 128 for z in t_int8.quantization.zeroPoint]
        t_int8.name = (t_int8.name or b"input") + b"_int8"
        sg.tensors.append(t_uint8)
        new = len(sg.tensors) - 1
        op = schema_fb.OperatorT()
        op.opcodeIndex = _opcode_index(model, _QUANTIZE)
        op.inputs, op.outputs = [new], [inp]
        sg.operators.insert(0, op)
        sg.inputs[0] = new
        _retarget_signatures(model, "inputs", inp, new)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
