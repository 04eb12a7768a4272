"""Read a .tflite file into an OpGraph: tensors with data are weights, operators come in execution order,
shapes and types are the file's own (LiteRT's flatbuffer schema, read with ai-edge-litert's generated
classes)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeshrink.errors import FormatError
from edgeshrink.measure.graph import Op, OpGraph

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8

# LiteRT reuses the input buffer for these (no new allocation).
DECODE_OP = "TFLM_DECODE"  # TFLite Micro's custom op that decodes compressed weights into the arena
_VIEWS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
_PARAMETER_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "INT32": np.int32,
    "UINT8": np.uint8,
    "INT64": np.int64,
    "INT16": np.int16,
    "INT8": np.int8,
    "BOOL": np.bool_,
    "FLOAT64": np.float64,
}


def is_tflite(path: str | Path) -> bool:
    """True when the file carries the TFLite flatbuffer identifier."""
    with open(path, "rb") as f:
        head = f.read(8)
    return len(head) == 8 and head[4:8] == TFLITE_IDENTIFIER


def _names(enum_class: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def load_tflite(path: str | Path | bytes):
    """The flatbuffer ModelT of a .tflite file (or its bytes), or a one-line FormatError."""
    from edgeshrink.runtimes.litert import require_litert

    require_litert("reading a .tflite file")
    from ai_edge_litert import schema_py_generated as schema

    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    if isinstance(path, bytes):
        path = "the .tflite bytes"
    if data[4:8] != TFLITE_IDENTIFIER:
        raise FormatError(f"{path} is not a TFLite file (no TFL3 identifier)")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as exc:
        raise FormatError(f"{path} is not a readable TFLite file ({type(exc).__name__})") from None


def _macs(op_type: str, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> int:
    """Dense MACs from TFLite's layouts: CONV_2D filter [out, kh, kw, in], DEPTHWISE_CONV_2D filter
    [1, kh, kw, out], FULLY_CONNECTED weights [out, in]."""
    if len(in_shapes) < 2 or not in_shapes[1]:
        return 0
    filt, outputs = in_shapes[1], math.prod(out_shape)
    if op_type == "CONV_2D" and len(filt) == 4:
        return outputs * filt[1] * filt[2] * filt[3]
    if op_type == "DEPTHWISE_CONV_2D" and len(filt) == 4:
        return outputs * filt[1] * filt[2]
    if op_type == "FULLY_CONNECTED" and len(filt) == 2:
        return outputs * filt[1]
    return 0


def from_tflite(path: str | Path | bytes) -> OpGraph:
    """Operations, activation sizes and weights of the first subgraph of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    model = load_tflite(path)
    graph = model.subgraphs[0]
    op_names, type_names = _names(schema.BuiltinOperator), _names(schema.TensorType)
    tensors = graph.tensors

    def shape(i: int) -> tuple[int, ...]:
        s = tensors[i].shape
        return tuple(max(int(d), 1) for d in s) if s is not None else ()

    def dtype(i: int):
        return _NUMPY_TYPES.get(type_names.get(tensors[i].type, ""), np.uint8)

    raw_buffers = _constant_buffers(model, tensors)
    weights = {str(i): np.frombuffer(raw, dtype=dtype(i)).reshape(shape(i) or (-1,)) for i, raw in raw_buffers.items()}
    decoded = _decoded_weights(model, graph, raw_buffers, shape, dtype)
    for name in {e for op in decoded.values() for e in op["encoded"]}:
        weights.pop(name, None)  # encoded bytes and tables: file bytes, not parameters
    weights.update({o: v for op in decoded.values() for o, v in op["outputs"].items()})
    arena_weights = {o for op in decoded.values() for o in op["outputs"]}
    sizes = {
        str(i): math.prod(shape(i)) * np.dtype(dtype(i)).itemsize
        for i in range(len(tensors))
        if str(i) not in weights or str(i) in arena_weights
    }
    aliases: dict[str, str] = {}
    ops: list[Op] = []
    parameters: set[str] = set()
    for k, operator in enumerate(graph.operators or []):
        code = model.operatorCodes[operator.opcodeIndex]
        op_type = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"CUSTOM_{code.builtinCode}")
        ins = [str(i) for i in (operator.inputs if operator.inputs is not None else []) if i >= 0]
        outs = [str(i) for i in (operator.outputs if operator.outputs is not None else [])]
        if k in decoded:  # TFLM_DECODE: writes decoded weights into the arena for the next op
            outs = list(decoded[k]["outputs"])
            ops.append(Op(f"{DECODE_OP}_{k}", DECODE_OP, f"decode {', '.join(outs)}", [], outs, [], 0, None))
            continue
        acts = [i for i in ins if i not in weights or i in arena_weights]
        used = [i for i in ins if i in weights]
        if op_type in _VIEWS and acts:
            for o in outs:
                aliases[o] = acts[0]
                sizes[o] = 0
        in_shapes = [shape(int(i)) for i in ins]
        macs = _macs(op_type, in_shapes, shape(int(outs[0]))) if outs else 0
        mac_weight = ins[1] if macs and len(ins) > 1 and ins[1] in weights else None
        if op_type in _PARAMETER_OPS:
            parameters.update(i for i in ins[1:] if i in weights)  # filter and bias
        name = tensors[int(outs[0])].name.decode() if outs and tensors[int(outs[0])].name else f"{op_type}_{k}"
        ops.append(Op(f"{op_type}_{k}", op_type, name, acts, outs, used, macs, mac_weight))
    inputs = [str(i) for i in graph.inputs]
    outputs = [str(i) for i in graph.outputs]
    notes = []
    if decoded:
        notes.append(f"{len(arena_weights)} weight tensors are decoded into the arena by TFLM's DECODE operator")
    return OpGraph(ops, sizes, aliases, inputs, outputs, weights, "TFLite", parameters, notes=notes)


def _constant_buffers(model, tensors) -> dict[int, bytes]:
    """The bytes of every tensor that has data in the file (weights, biases, shapes, encoded tensors)."""
    out = {}
    for i, t in enumerate(tensors):
        buffer = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        data = getattr(buffer, "data", None)
        if data is not None and len(data) > 0:
            out[i] = np.asarray(data, dtype=np.uint8).tobytes()
    return out


def _decoded_weights(model, graph, raw_buffers: dict[int, bytes], shape, dtype) -> dict[int, dict]:
    """Per TFLM_DECODE operator (by index): the (encoded, ancillary) input names and the decoded tensors."""
    from edgeshrink.encode.tflm import TYPE_HUFFMAN, TYPE_PRUNE, Encoded, huffman_decode, lut_decode, prune_decode

    out = {}
    for k, operator in enumerate(graph.operators or []):
        code = model.operatorCodes[operator.opcodeIndex]
        if (code.customCode or b"") != DECODE_OP.encode():
            continue
        ins, outs = list(operator.inputs), list(operator.outputs)
        decoded = {}
        for j, o in enumerate(outs):
            data, ancillary = raw_buffers.get(ins[2 * j], b""), raw_buffers.get(ins[2 * j + 1], b"")
            if len(ancillary) < 16:
                raise FormatError(f"TFLM_DECODE operator {k} has no ancillary data for output {o}: damaged file")
            q = graph.tensors[o].quantization
            zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [0])
            axis = int(q.quantizedDimension) if q is not None and len(zps) > 1 else 0
            kind, s, d = ancillary[0], shape(o), dtype(o)
            if kind == TYPE_PRUNE:
                value = prune_decode(data, ancillary, s, d, zps, axis)
            elif kind == TYPE_HUFFMAN:
                value = huffman_decode(Encoded("huffman", data, ancillary), math.prod(s), d).reshape(s)
            elif kind == 0:
                value = lut_decode(data, ancillary, s, d)
            else:
                raise FormatError(f"TFLM_DECODE type {kind} (operator {k}) is not one edgeshrink can read")
            decoded[str(o)] = value
        out[k] = {"encoded": [str(i) for i in ins], "outputs": decoded}
    return out


def tflite_input_shape(path: str | Path) -> tuple[int, ...]:
    model = load_tflite(path)
    graph = model.subgraphs[0]
    return tuple(int(d) for d in graph.tensors[graph.inputs[0]].shape)
