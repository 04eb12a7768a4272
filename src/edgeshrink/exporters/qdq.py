"""Rewrite an exported fake-quantized ONNX graph into a deployable QDQ model.

The PyTorch exporter writes activation fake-quantizers as QuantizeLinear/DequantizeLinear pairs, but
weights as float initializers (already on the integer grid). This module replaces each quantized
layer's float weight by an int8 (or INT4 ...) initializer and a DequantizeLinear carrying
edgeshrink's own per-channel (or blocked) scales, the bias by an int32 initializer at scale
s_input x s_weight (what integer kernels need), and sets the activations' integer type: uint8 (U8S8)
or int8 (S8S8, zero points shifted by -128: the same grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeshrink.errors import ExportError

WEIGHT_TYPES = {8: TensorProto.INT8, 4: TensorProto.INT4}


@dataclass
class QuantizedWeight:
    """A quantized layer's weight as the exported file stores it."""

    layer: str
    integers: np.ndarray  # int values, weight shape
    scale: np.ndarray  # [out] per channel, or blocked [out, in / group, *kernel]
    bits: int
    group_size: int  # 0: per output channel


def _storage_bits(bits: int) -> int:
    """INT4 for 2..4-bit weights (INT2 needs opset 25, which ONNX Runtime 1.32 does not run), else INT8."""
    return 8 if bits > 4 else 4


def pack_nibbles(values: np.ndarray, bits: int) -> bytes:
    """Two's-complement sub-byte integers packed little-end first (ONNX INT4 / INT2 raw layout)."""
    per_byte = 8 // bits
    flat = (values.reshape(-1).astype(np.int64) & ((1 << bits) - 1)).astype(np.uint8)
    flat = np.concatenate([flat, np.zeros((-len(flat)) % per_byte, dtype=np.uint8)]).reshape(-1, per_byte)
    shifts = (np.arange(per_byte) * bits).astype(np.uint8)
    return np.bitwise_or.reduce(flat << shifts, axis=1).astype(np.uint8).tobytes()


def integer_tensor(name: str, values: np.ndarray, bits: int) -> onnx.TensorProto:
    """An INT8 / INT4 initializer stored as raw bytes (1 or 1/2 byte per value)."""
    if bits == 8:
        return numpy_helper.from_array(values.astype(np.int8), name)
    return helper.make_tensor(name, WEIGHT_TYPES[bits], values.shape, pack_nibbles(values, bits), raw=True)


def _initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def _producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if tensor in n.output), None)


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in graph.node if tensor in n.input]


def _scalar(inits: dict[str, onnx.TensorProto], name: str) -> float | None:
    if name not in inits:
        return None
    value = numpy_helper.to_array(inits[name])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


def _dense_target(w: QuantizedWeight) -> np.ndarray:
    """The fake-quantized weight, transposed: what a MatMul's initializer holds."""
    scale = (
        np.repeat(w.scale, w.group_size, axis=1)[:, : w.integers.shape[1]] if w.group_size else w.scale.reshape(-1, 1)
    )
    return (w.integers * scale).T.astype(np.float32)


def _weight_initializer(inits: dict[str, onnx.TensorProto], w: QuantizedWeight, done: set[str]) -> tuple[str, bool]:
    """(initializer holding the layer's weight, whether it is stored transposed). A Linear applied to
    inputs of more than two dimensions exports as MatMul with the weight transposed and renamed; it is
    found by its values (the fake-quantized weight, transposed), an initializer not yet rewritten first:
    equal weights (the layers of an nn.TransformerEncoder start as copies) may have one initializer each,
    or share one the exporter deduplicated."""
    name = f"{w.layer}.weight"
    if name in inits:
        return name, False
    if w.integers.ndim == 2:
        target = _dense_target(w)
        atol = 1e-7 * float(np.abs(target).max() or 1.0)
        matches = [
            init.name
            for init in inits.values()
            if tuple(init.dims) == target.shape
            and init.data_type == TensorProto.FLOAT
            and np.allclose(numpy_helper.to_array(init), target, rtol=1e-6, atol=atol)
        ]
        candidates = [m for m in matches if m not in done] or matches
        if candidates:
            return candidates[0], True
    raise ExportError(f"export: no initializer {name!r} in the exported graph; cannot store its integer weights")


def _check_same(first: QuantizedWeight, other: QuantizedWeight, name: str) -> None:
    same = np.array_equal(first.integers, other.integers) and np.array_equal(first.scale, other.scale)
    if not same:
        raise ExportError(
            f"export: {first.layer} and {other.layer} share the initializer {name} but not their integer "
            "weights; export with dynamo=True or make the layers' weights differ"
        )


def rewrite_weights(model: onnx.ModelProto, weights: list[QuantizedWeight]) -> list[dict]:
    """Replace float weights (and their biases) by integer initializers behind DequantizeLinear."""
    graph = model.graph
    inits = _initializers(graph)
    new_nodes, rows = [], []
    done: dict[str, QuantizedWeight] = {}
    for w in weights:
        name, transposed = _weight_initializer(inits, w, set(done))
        if name in done:  # one initializer for equal weights: already integers behind its DequantizeLinear
            _check_same(done[name], w, name)
            rows.append({"layer": w.layer, "weight": f"INT{_storage_bits(w.bits)}", "bias": "float"})
            continue
        done[name] = w
        consumers = _consumers(graph, name)
        if not consumers or any(c.op_type not in ("Conv", "Gemm", "MatMul") for c in consumers):
            ops = ", ".join(c.op_type for c in consumers) or "nothing"
            raise ExportError(f"export: {name} feeds {ops}; expected Conv or Gemm")
        storage = _storage_bits(w.bits)
        ints = w.integers.astype(np.int64).T if transposed else w.integers.astype(np.int64)
        graph.initializer.remove(inits[name])
        key = f"{w.layer}.weight"
        q_name, s_name, z_name = f"{key}_quantized", f"{key}_scale", f"{key}_zero_point"
        scale = w.scale.T if transposed else w.scale  # transposed blocked scales: [in / group, out]
        graph.initializer.append(integer_tensor(q_name, ints, storage))
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(scale, dtype=np.float32), s_name))
        graph.initializer.append(integer_tensor(z_name, np.zeros(scale.shape, dtype=np.int64), storage))
        if w.group_size:
            attrs = {"axis": 0 if transposed else 1, "block_size": w.group_size}
        else:
            attrs = {"axis": 1 if transposed else 0}
        new_nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [name], **attrs))
        row = {"layer": w.layer, "weight": f"INT{storage}" if storage < 8 else "INT8", "bias": "float"}
        consumer = consumers[0]
        bias = consumer.input[2] if consumer.op_type in ("Conv", "Gemm") and len(consumer.input) > 2 else ""
        source = _producer(graph, consumer.input[0])
        s_x = _scalar(inits, source.input[1]) if source is not None and source.op_type == "DequantizeLinear" else None
        if bias and bias in inits and s_x is not None and storage == 8 and not w.group_size:
            b = numpy_helper.to_array(inits[bias]).astype(np.float64)
            b_scale = (s_x * w.scale.astype(np.float64)).astype(np.float32)
            b_int = np.clip(np.round(b / b_scale), -(2**31), 2**31 - 1).astype(np.int32)
            graph.initializer.remove(inits[bias])
            graph.initializer.append(numpy_helper.from_array(b_int, f"{bias}_quantized"))
            graph.initializer.append(numpy_helper.from_array(b_scale, f"{bias}_scale"))
            graph.initializer.append(numpy_helper.from_array(np.zeros_like(b_int), f"{bias}_zero_point"))
            new_nodes.append(
                helper.make_node(
                    "DequantizeLinear", [f"{bias}_quantized", f"{bias}_scale", f"{bias}_zero_point"], [bias], axis=0
                )
            )
            row["bias"] = "INT32"
        rows.append(row)
    for node in reversed(new_nodes):
        graph.node.insert(0, node)
    return rows


def set_activation_type(model: onnx.ModelProto, activation_type: str) -> int:
    """Make every activation Q/DQ pair uint8 (as exported) or int8 (zero point - 128, same grid).
    Returns the number of zero points changed."""
    if activation_type == "uint8":
        return 0
    if activation_type != "int8":
        raise ExportError(f"activation type must be uint8 or int8, got {activation_type!r}")
    graph = model.graph
    inits = _initializers(graph)
    changed = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = inits.get(node.input[2])
        if zp is None or zp.data_type != TensorProto.UINT8:
            continue
        value = numpy_helper.to_array(zp).astype(np.int16) - 128
        zp.CopyFrom(numpy_helper.from_array(value.astype(np.int8), zp.name))
        changed += 1
    del graph.value_info[:]  # the exporter's recorded uint8 types are stale now; runtimes re-infer them
    return changed
