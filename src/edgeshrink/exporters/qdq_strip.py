"""The float twin of a QDQ graph, taken from the graph itself instead of a second PyTorch export.

The ONNX exporter times the integer file against the same model in float (onnx.choose_kernels). That
twin is the QDQ graph with every activation QuantizeLinear/DequantizeLinear pair removed and every
DequantizeLinear of an integer initializer replaced by the float values it computes: the same operators,
the fake-quantized weights in float, what `export_copy(model, "float")` would export. Taking it from the
graph saves the PyTorch exporter's second pass (a third of a quantized model's export time). The
dequantized values come from ONNX's reference implementation of DequantizeLinear (INT8, INT4, per
channel, blocked).

The twin stands for the float file edgeshrink exports, at an older opset than the QDQ graph: an operator
the float opset lacks (Gelu, opset 20, which the float export writes as Erf, Mul and Add: 3-7% slower on
the zoo's transformer) would make the twin faster than that file, so such a graph gives None. So does a
graph this does not recognise (a QuantizeLinear or DequantizeLinear left over, one inside a subgraph, an
operator of another domain); the caller then exports the twin from PyTorch.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgeshrink.exporters.onnx_simplify import drop_unread

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _dequantized(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict[str, onnx.TensorProto]:
    """The float initializers the DequantizeLinear `nodes` (all of integer initializers) compute."""
    inits = {i.name: i for i in model.graph.initializer}
    used = {name for node in nodes for name in node.input if name}
    outputs = [helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None) for node in nodes]
    graph = helper.make_graph(list(nodes), "weights", [], outputs, [inits[name] for name in sorted(used)])
    values = ReferenceEvaluator(helper.make_model(graph, opset_imports=model.opset_import)).run(None, {})
    return {node.output[0]: numpy_helper.from_array(v, node.output[0]) for node, v in zip(nodes, values, strict=True)}


def _live(nodes: list[onnx.NodeProto], outputs: list[str]) -> list[onnx.NodeProto]:
    """Those of `nodes` that the `outputs` depend on, in their order."""
    producers = {out: i for i, node in enumerate(nodes) for out in node.output}
    needed, stack = set(), list(outputs)
    while stack:
        i = producers.get(stack.pop())
        if i is not None and i not in needed:
            needed.add(i)
            stack.extend(nodes[i].input)
    return [node for i, node in enumerate(nodes) if i in needed]


def _defined_at(op_type: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return False
    return True


def float_twin_from_qdq(model: onnx.ModelProto, float_opset: int) -> onnx.ModelProto | None:
    """`model` (a QDQ graph, not modified) without its quantization, or None where the float export at
    `float_opset` would write other operators: see the module docstring."""
    nodes = model.graph.node
    subgraphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if any(a.type in subgraphs for n in nodes for a in n.attribute):
        return None
    if any(n.domain not in ("", "ai.onnx") for n in nodes):
        return None
    if not all(_defined_at(n.op_type, float_opset) for n in nodes if n.op_type not in QDQ):
        return None
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    graph = twin.graph
    inits = {i.name for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    weights = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    bypass = {}  # DequantizeLinear output -> the float tensor its QuantizeLinear read
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is not None and source.op_type == "QuantizeLinear":
            bypass[node.output[0]] = source.input[0]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = _resolve(bypass, name)
    for out in graph.output:
        if out.name in bypass:  # the graph's last op was a quantizer: keep the output's name
            graph.node.append(helper.make_node("Identity", [_resolve(bypass, out.name)], [out.name]))
    floats = _dequantized(twin, weights) if weights else {}
    graph.initializer.extend(floats.values())
    kept = [n for n in graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] in floats)]
    live = _live(kept, [o.name for o in graph.output])
    del graph.node[:]
    graph.node.extend(live)
    if any(n.op_type in QDQ for n in graph.node):
        return None
    drop_unread(graph, inits)
    return twin


def _resolve(bypass: dict[str, str], name: str) -> str:
    while name in bypass:
        name = bypass[name]
    return name
