"""MACs of a measured graph: per operation (edgeshrink.mac_count's rules), per layer and in total.

Nonzero MACs skip multiplications by zero weights: dense MACs x the weight's density, which is exact
for linear layers and for convolutions (each weight is used once per output position).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgeshrink.mac_count import MATMUL, MATMUL_BIAS, RECURRENT, aten_macs, conv_macs, matmul_macs, recurrent_macs

if TYPE_CHECKING:
    import torch

    from edgeshrink.measure.graph import OpGraph


def _shape(node: object) -> tuple[int, ...]:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    return tuple(int(d) for d in val.shape) if val is not None and hasattr(val, "shape") else ()


def torch_node_macs(node: torch.fx.Node, weights: dict[str, np.ndarray]) -> tuple[int, str | None]:
    """(dense MACs, name of the weight operand or None) of one torch.export node (edgeshrink.mac_count's rules)."""
    packet = getattr(node.target, "_overloadpacket", None)
    name = getattr(packet, "__name__", "")
    args = list(node.args)
    if name in RECURRENT and len(args) >= 3 and isinstance(args[2], list | tuple):
        # aten.gru.input(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
        batch_first = bool(args[-1]) if isinstance(args[-1], bool) else False
        return recurrent_macs(_shape(args[0]), batch_first, [_shape(w) for w in args[2]]), None
    transposed = name in {"convolution", "_convolution"} and len(args) > 6 and bool(args[6])
    macs, index = aten_macs(name, [_shape(a) for a in args], _shape(node), transposed)
    if index is None or index >= len(args):
        return macs, None
    candidates = [args[index]]
    if name in MATMUL or name in MATMUL_BIAS:  # the weight may be either factor: x @ w or w @ x
        candidates.append(args[index - 1])
    names = [a.name for a in candidates if hasattr(a, "name") and a.name in weights]
    return macs, names[0] if names else None


def onnx_node_macs(op_type: str, attrs: dict, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]) -> int:
    """Dense MACs of one ONNX node from its input and output shapes."""
    if op_type == "Conv":
        return conv_macs(out_shape, in_shapes[0], in_shapes[1])
    if op_type == "ConvTranspose":
        return conv_macs(out_shape, in_shapes[0], in_shapes[1], transposed=True)
    if op_type == "Gemm":
        a = in_shapes[0]
        return matmul_macs(out_shape, a[0] if attrs.get("transA", 0) else a[1])
    if op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        return matmul_macs(out_shape, in_shapes[0][-1])
    if op_type == "QLinearConv":
        return conv_macs(out_shape, in_shapes[0], in_shapes[3])
    if op_type in ("GRU", "LSTM", "RNN"):  # W [dirs, gates*H, I], R [dirs, gates*H, H]; layout 1 = batch first
        dims = [(s[0] * s[1], s[2]) for s in in_shapes[1:3] if len(s) == 3]
        return recurrent_macs(in_shapes[0], bool(attrs.get("layout", 0)), dims)
    return 0


@dataclass
class LayerMacs:
    layer: str
    op: str
    dense: int
    nonzero: int


@dataclass
class MacSummary:
    """Multiply-accumulates of one forward pass (batch as the graph was built), dense and with
    multiplications by zero weights left out."""

    dense: int
    nonzero: int
    per_layer: list[LayerMacs]
    source: str


def mac_summary(graph: OpGraph) -> MacSummary:
    """Total and per-layer MACs (dense and nonzero) of a graph."""
    per_layer: dict[str, LayerMacs] = {}
    for op in graph.ops:
        if op.macs == 0:
            continue
        row = per_layer.setdefault(op.layer, LayerMacs(op.layer, op.target, 0, 0))
        row.dense += op.macs
        row.nonzero += graph.nonzero_macs(op)
    rows = list(per_layer.values())
    return MacSummary(
        sum(r.dense for r in rows),
        sum(r.nonzero for r in rows),
        rows,
        f"computed from the {graph.source} graph's tensor shapes",
    )
