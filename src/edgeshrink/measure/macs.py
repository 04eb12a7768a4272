"""Multiply-accumulates per operation, from tensor shapes alone.

Dense MACs follow `torch.utils.flop_counter` (FLOPs = 2 x MACs): a convolution costs
out_elements x (in_channels / groups) x kernel elements, a matrix product out_elements x inner size.
Nonzero MACs skip multiplications by zero weights: dense MACs x the weight's density, which is exact
for linear layers and for convolutions (each weight is used once per output position).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgeshrink.measure.graph import OpGraph

_CONV = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}
_CONV_T = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_MATMUL = {"mm", "bmm", "matmul"}
_MATMUL_BIAS = {"addmm", "baddbmm"}


def conv_macs(out_shape, in_shape, weight_shape, transposed: bool = False) -> int:
    """Each output (or, transposed, each input) element takes weight[0]-slice many MACs."""
    per_element = math.prod(weight_shape[1:])
    return math.prod(in_shape if transposed else out_shape) * per_element


def matmul_macs(out_shape, inner: int) -> int:
    return math.prod(out_shape) * inner


def _shape(node) -> tuple[int, ...]:
    val = node.meta.get("val") if hasattr(node, "meta") else None
    return tuple(int(d) for d in val.shape) if val is not None and hasattr(val, "shape") else ()


def torch_node_macs(node: torch.fx.Node, weights: dict[str, np.ndarray]) -> tuple[int, str | None]:
    """(dense MACs, name of the weight operand or None) of one torch.export node."""
    packet = getattr(node.target, "_overloadpacket", None)
    name = getattr(packet, "__name__", "")
    args = node.args
    out = _shape(node)

    def weight_name(arg) -> str | None:
        return arg.name if hasattr(arg, "name") and arg.name in weights else None

    if name in _CONV or name in _CONV_T:
        transposed = name in _CONV_T or (name in {"convolution", "_convolution"} and bool(args[6]))
        return conv_macs(out, _shape(args[0]), _shape(args[1]), transposed), weight_name(args[1])
    if name == "linear":
        return matmul_macs(out, _shape(args[1])[1]), weight_name(args[1])
    if name in _MATMUL or name in _MATMUL_BIAS:
        a, b = (args[0], args[1]) if name in _MATMUL else (args[1], args[2])
        a_shape = _shape(a)
        inner = a_shape[-1] if a_shape else 1
        return matmul_macs(out, inner), weight_name(b) or weight_name(a)
    if name == "scaled_dot_product_attention":
        q, k, v = (_shape(a) for a in args[:3])
        return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1]), None
    return 0, None


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
    return 0


def mac_summary(graph: OpGraph) -> dict:
    """Total and per-layer MACs (dense and nonzero) of a graph, batch as it was built."""
    per_layer: dict[str, dict] = {}
    for op in graph.ops:
        if op.macs == 0:
            continue
        row = per_layer.setdefault(op.layer, {"layer": op.layer, "op": op.target, "dense": 0, "nonzero": 0})
        row["dense"] += op.macs
        row["nonzero"] += graph.nonzero_macs(op)
    rows = list(per_layer.values())
    return {
        "dense": sum(r["dense"] for r in rows),
        "nonzero": sum(r["nonzero"] for r in rows),
        "per_layer": rows,
        "source": f"computed from the {graph.source} graph's tensor shapes",
    }


def count_macs(model: nn.Module, example: torch.Tensor) -> dict:
    """MACs of one forward pass on `example` (masks and codebooks applied): see `mac_summary`."""
    from edgeshrink.measure.graph import from_torch

    return mac_summary(from_torch(model, example))


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> int:
    """Dense MACs of one forward pass on a zero input of `input_shape`, from PyTorch's own operator-level
    counter (`torch.utils.flop_counter.FlopCounterMode`, FLOPs / 2): what the zoo lists and what channel
    pruning targets."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch_size, *input_shape, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
