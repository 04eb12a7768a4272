"""Read an ONNX file into an OpGraph: initializers are weights, shapes come from ONNX shape inference
(symbolic dimensions, a dynamic batch, are set to 1)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeshrink.errors import FormatError
from edgeshrink.measure.graph import Op, OpGraph
from edgeshrink.measure.macs import onnx_node_macs

# Operations whose output reuses the input's buffer in ONNX Runtime (no new allocation).
_VIEWS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}


def load_onnx(path: str | Path):
    """The ModelProto of an ONNX file, or a one-line FormatError."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others on foreign bytes
        raise FormatError(f"{path} is not a readable ONNX file ({str(exc).splitlines()[0][:100]})") from None


def _fix_batch(model) -> None:
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1


def input_shape(model) -> tuple[int, ...]:
    """The first graph input's shape (symbolic dimensions as 1)."""
    init = {i.name for i in model.graph.initializer}
    first = next(v for v in model.graph.input if v.name not in init)
    return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in first.type.tensor_type.shape.dim)


def from_onnx(path: str | Path) -> OpGraph:
    """Operations, activation sizes and weights of an ONNX model at batch 1."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    model = load_onnx(path)
    _fix_batch(model)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:
        raise FormatError(f"{path}: ONNX shape inference failed ({str(exc).splitlines()[0][:100]})") from None
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    itemsize: dict[str, int] = {}
    for v in [*graph.input, *graph.value_info, *graph.output]:
        t = v.type.tensor_type
        if not t.HasField("shape"):
            continue
        shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)
        itemsize[v.name] = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
    for name, w in weights.items():
        shapes[name] = tuple(w.shape)
    inputs = [v.name for v in graph.input if v.name not in weights]
    sizes = {n: math.prod(shapes.get(n, ())) * itemsize.get(n, 4) for n in inputs}
    aliases: dict[str, str] = {}
    ops: list[Op] = []
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type == "Constant":
            for out in node.output:
                weights[out] = numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(0)
                shapes[out] = tuple(weights[out].shape)
            continue
        acts = [x for x in node.input if x and x not in weights]
        used = [x for x in node.input if x in weights]
        for out in node.output:
            if node.op_type in _VIEWS and acts:
                aliases[out] = acts[0]
                sizes[out] = 0
            else:
                sizes[out] = math.prod(shapes.get(out, ())) * itemsize.get(out, 4)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        in_shapes = [shapes.get(x, ()) for x in node.input]
        macs = onnx_node_macs(node.op_type, attrs, in_shapes, shapes.get(node.output[0], ())) if node.output else 0
        weight_inputs = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3}
        idx = weight_inputs.get(node.op_type)
        mac_weight = node.input[idx] if idx is not None and len(node.input) > idx else None
        ops.append(
            Op(
                name,
                node.op_type,
                name,
                acts,
                list(node.output),
                used,
                macs,
                mac_weight if mac_weight in weights else None,
            )
        )
    outputs = [o.name for o in graph.output]
    return OpGraph(ops, sizes, aliases, inputs, outputs, weights, "ONNX")
