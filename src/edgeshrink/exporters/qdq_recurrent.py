"""Recurrent weights as int8 rows in an ONNX file: a smaller file, at a measured cost in latency.

A quantized model's GRU/LSTM/RNN weights are on int8 row grids (quant/recurrent.py) but the layers compute
in float. The PyTorch exporter writes those weights as float32 initializers, some under their PyTorch names,
some already sliced and stacked into ONNX's gate order, all feeding the recurrent op's W and R inputs through
shape-only ops. `store_recurrent_int8` finds every such initializer, checks that each of its rows (last axis)
is exactly int8 codes times one of the model's row scales, and stores it as INT8 behind a DequantizeLinear
(axis 0 over the rows, reshaped back when the initializer has more than two dimensions). The file computes
the same numbers. ONNX Runtime does not fold DequantizeLinear ahead of time in a QDQ model, so the weights are
dequantized (and re-sliced) on every run: slower, which is why the exporter's default keeps them float.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

RECURRENT_OPS = ("GRU", "LSTM", "RNN")
SHAPE_OPS = ("Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Split", "Gather")
QMAX = 127


def _weight_sources(graph: onnx.GraphProto, inits: dict[str, onnx.TensorProto]) -> list[str]:
    """Initializers that reach a recurrent op's W or R input through shape-only ops."""
    producers = {out: node for node in graph.node for out in node.output}
    found: set[str] = set()
    stack = [t for node in graph.node if node.op_type in RECURRENT_OPS for t in node.input[1:3] if t]
    while stack:
        tensor = stack.pop()
        if tensor in inits:
            found.add(tensor)
            continue
        node = producers.get(tensor)
        if node is not None and node.op_type in SHAPE_OPS:
            stack += list(node.input) if node.op_type == "Concat" else list(node.input[:1])
    return sorted(found)


def _row_codes(rows: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 codes, row scales) when every row is exactly codes x one of `scales` (sorted), else None."""
    wanted = np.abs(rows).max(axis=1) / QMAX
    at = np.clip(np.searchsorted(scales, wanted), 1, max(1, len(scales) - 1))
    low, high = scales[at - 1], scales[np.minimum(at, len(scales) - 1)]
    pick = np.where(np.abs(low - wanted) <= np.abs(high - wanted), low, high)
    pick = np.where(wanted == 0, 1.0, pick).astype(np.float32)
    codes = np.round(rows / pick[:, None])
    exact = np.array_equal((codes * pick[:, None]).astype(np.float32), rows)
    return (codes.astype(np.int8), pick) if exact and np.abs(codes).max(initial=0) <= QMAX else None


def store_recurrent_int8(model: onnx.ModelProto, row_scales: list[np.ndarray]) -> list[str]:
    """Rewrite the recurrent weights of `model` (in place) as INT8 + DequantizeLinear; returns the
    initializers rewritten. `row_scales`: every recurrent weight quantizer's scales."""
    if not row_scales:
        return []
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    scales = np.unique(np.concatenate([s.reshape(-1) for s in row_scales]).astype(np.float32))
    nodes, done = [], []
    for name in _weight_sources(graph, inits):
        value = numpy_helper.to_array(inits[name])
        if value.dtype != np.float32 or value.ndim < 2:
            continue
        found = _row_codes(value.reshape(-1, value.shape[-1]), scales)
        if found is None:
            continue  # not on the model's grids (a constant the exporter made): left as it is
        codes, scale = found
        graph.initializer.remove(inits[name])
        q, s, z = f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"
        graph.initializer.extend(
            [
                numpy_helper.from_array(codes, q),
                numpy_helper.from_array(scale, s),
                numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), z),
            ]
        )
        rows = name if value.ndim == 2 else f"{name}_rows"
        nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [rows], axis=0))
        if value.ndim > 2:
            graph.initializer.append(numpy_helper.from_array(np.array(value.shape, dtype=np.int64), f"{name}_shape"))
            nodes.append(helper.make_node("Reshape", [rows, f"{name}_shape"], [name]))
        done.append(name)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    return done
