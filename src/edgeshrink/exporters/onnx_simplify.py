"""Operators PyTorch's exporter writes in a general form, rewritten as the specific ONNX operator that
computes the same and that ONNX Runtime runs faster.

- `torch.flatten(x, 1)` / `x.view(n, -1)` is a Reshape to a constant shape [-1, N]: written as
  Flatten(axis=1), only where shape inference proves the Reshape keeps the batch dimension and joins all
  the others. LeNet-5's int8 file ran 2-3% faster at batch 1 with its one Reshape written as Flatten, in
  every repeat on this machine (docs/benchmarks.md, issue 15).
- `x.mean((-2, -1), keepdim=True)` / AdaptiveAvgPool2d(1) is a ReduceMean over the spatial axes: written as
  GlobalAveragePool where the axes are every axis after the channel one.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes, by output name."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Each inferred tensor's dimensions (None where unknown or symbolic); empty when inference fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no shapes means no rewrite, never a wrong one
        return {}
    g = inferred.graph
    shapes = {}
    for info in [*g.value_info, *g.input, *g.output]:
        t = info.type.tensor_type
        if t.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def _is_batch_flatten(node: onnx.NodeProto, target: np.ndarray | None, dims: list[int | None] | None) -> bool:
    """True when this Reshape computes exactly Flatten(axis=1) of its input."""
    if target is None or target.ndim != 1 or target.size != 2 or not dims or len(dims) < 2:
        return False
    allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
    first, joined = int(target[0]), int(target[1])
    keeps_batch = first == -1 or (first == 0 and not allowzero)
    rest = dims[1:]
    return keeps_batch and all(d for d in rest) and math.prod(rest) == joined and joined > 0


def _is_global_mean(node: onnx.NodeProto, axes: np.ndarray | None, dims: list[int | None] | None) -> bool:
    """True when this ReduceMean (opset 18+, axes as an input) is GlobalAveragePool of its input."""
    attrs = {a.name: a.i for a in node.attribute}
    if axes is None or not dims or len(dims) < 3 or not attrs.get("keepdims", 1):
        return False
    rank = len(dims)
    return sorted(int(a) % rank for a in axes.reshape(-1)) == list(range(2, rank))


def simplify(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite, in place, batch-flattening Reshapes as Flatten(axis=1) and spatial ReduceMeans as
    GlobalAveragePool; drops constants nothing reads any more. Returns how many of each were rewritten."""
    graph = model.graph
    constants, shapes = _constants(graph), _static_shapes(model)
    count = {"Flatten": 0, "GlobalAveragePool": 0}
    freed: set[str] = set()  # the shape / axes constants of the rewritten nodes
    for i, node in enumerate(list(graph.node)):
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        second, dims = constants.get(node.input[1]), shapes.get(node.input[0])
        if node.op_type == "Reshape" and _is_batch_flatten(node, second, dims):
            new = helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
        elif node.op_type == "ReduceMean" and _is_global_mean(node, second, dims):
            new = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        else:
            continue
        graph.node.remove(node)
        graph.node.insert(i, new)
        count[new.op_type] += 1
        freed.add(node.input[1])
    _drop_unread(graph, freed)
    return count


def _drop_unread(graph: onnx.GraphProto, names: set[str]) -> None:
    """Remove those constants no node reads any more (kept when a subgraph might read them)."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unread = names - read
    for init in [i for i in graph.initializer if i.name in unread]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in unread]:
        graph.node.remove(node)
