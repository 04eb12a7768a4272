"""A model as a list of operations over named tensors: what MAC counting, peak memory and latency
estimates read. Built from a torch.export graph (`from_torch`) or an ONNX file (`measure.onnx_graph`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeshrink.measure.macs import torch_node_macs


@dataclass
class Op:
    """One computation: the activation tensors it reads and writes, the weights it uses, its MACs."""

    name: str
    target: str  # aten op or ONNX op type
    layer: str  # module path (torch) or node name (ONNX)
    inputs: list[str]
    outputs: list[str]
    weights: list[str] = field(default_factory=list)
    macs: int = 0  # dense multiply-accumulates, batch as exported
    mac_weight: str | None = None  # the weight whose zeros can be skipped


@dataclass
class OpGraph:
    """Activations (sizes in bytes), aliases (view -> tensor it views), weights (name -> values)."""

    ops: list[Op]
    sizes: dict[str, int]
    aliases: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    weights: dict[str, np.ndarray]
    source: str
    # The weights that are model parameters, when the format stores them as integers next to other
    # constants (TFLite: filters and biases); None: every floating-point weight is a parameter.
    parameters: set[str] | None = None
    # Weights a runtime holds as integer codes of this many bits (a quantized torch model's layers).
    weight_bits: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def root(self, name: str) -> str:
        """The tensor whose storage `name` uses (itself unless it is a view)."""
        while name in self.aliases:
            name = self.aliases[name]
        return name

    def nonzero_macs(self, op: Op) -> int:
        """MACs when multiplications by zero weights are skipped: dense MACs x the weight's density."""
        if op.mac_weight is None or op.macs == 0:
            return op.macs
        w = self.weights[op.mac_weight]
        return op.macs * int(np.count_nonzero(w)) // max(w.size, 1)

    def stored_bytes(self, name: str) -> int:
        """Bytes of one weight as the runtime holds it (integer codes at their width, else its dtype)."""
        w = self.weights[name]
        bits = self.weight_bits.get(name)
        return w.nbytes if bits is None else math.ceil(w.size * bits / 8)

    def weight_bytes(self, op: Op) -> int:
        return sum(self.stored_bytes(w) for w in op.weights)


def _tensor_bytes(val: object) -> int:
    if isinstance(val, torch.Tensor):
        return math.prod(val.shape) * val.element_size()
    if isinstance(val, list | tuple):
        return sum(_tensor_bytes(v) for v in val)
    return 0


def _is_view(target: object) -> bool:
    if target is operator.getitem:
        return True
    schema = getattr(target, "_schema", None)
    if schema is None:
        return False
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def _layer(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self___", "") or node.name


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach()
    if value.dtype == torch.bfloat16:
        value = value.float()
    return value.numpy()


def _is_fake_quant(node: torch.fx.Node) -> bool:
    return "fake_quantize" in str(node.target) or "quantize_dequantize" in str(node.target)


_FUSED_ACTIVATIONS = ("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "clamp")


def _fuse_activation(src: str, producer: dict[str, Op], readers: dict[str, list[Op]], sizes: dict[str, int]) -> None:
    """A ReLU-like op between a layer and its quantizer runs inside the layer's integer kernel: the
    layer's float output never exists."""
    op = producer.get(src)
    if op is None or not any(
        op.target.endswith(f".{a}.default") or f"aten.{a}." in op.target for a in _FUSED_ACTIVATIONS
    ):
        return
    inner = op.inputs[0] if op.inputs else None
    if inner in producer and [r.name for r in readers.get(inner, [])] == [op.name]:
        sizes[inner] = 0


def _integer_activations(ep, ops: list[Op], sizes: dict[str, int], aliases: dict[str, str]) -> int:
    """Count quantized activations at 1 byte per element: a fake-quantize node's output is what the
    integer kernel writes, and a tensor read only by fake-quantize nodes (a conv's output before its
    quantizer, or its ReLU's) is fused away into it. Returns the number of quantized tensors."""
    nodes = {n.name: n for n in ep.graph.nodes}
    readers: dict[str, list[Op]] = {}
    for op in ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)
    producer = {o: op for op in ops for o in op.outputs}
    produced = set(producer)
    count = 0
    for op in ops:
        node = nodes[op.name]
        if not _is_fake_quant(node) or not op.inputs:
            continue
        count += 1
        src, out = op.inputs[0], op.outputs[0]
        elements = math.prod(node.meta["val"].shape)
        if src in produced and src not in aliases and all(_is_fake_quant(nodes[r.name]) for r in readers[src]):
            sizes[src], sizes[out], aliases[out] = elements, 0, src
            _fuse_activation(src, producer, readers, sizes)
        else:
            sizes[out] = elements
    return count


def from_torch(model: nn.Module, example: torch.Tensor, weight_bits: dict[str, int] | None = None) -> OpGraph:
    """Export the model with torch.export (batch as in `example`) and read its operations.

    `weight_bits` (state-dict key -> bits) marks weights a runtime stores as integer codes; a model with
    fake-quantized activations then has them counted at 1 byte (see `_integer_activations`)."""
    from edgeshrink.weights import baked_copy

    model = baked_copy(model).eval()
    with torch.no_grad():
        ep = torch.export.export(model, (example,))
    sig = ep.graph_signature
    weight_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    tensors = {**ep.state_dict, **ep.constants}
    weights: dict[str, np.ndarray] = {}
    bits: dict[str, int] = {}
    sizes: dict[str, int] = {}
    aliases: dict[str, str] = {}
    inputs: list[str] = []
    outputs: list[str] = []
    ops: list[Op] = []
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in weight_of:
                weights[node.name] = _numpy(tensors[weight_of[node.name]])
                if weight_bits and weight_of[node.name] in weight_bits:
                    bits[node.name] = weight_bits[weight_of[node.name]]
            else:
                inputs.append(node.name)
                sizes[node.name] = _tensor_bytes(node.meta.get("val"))
            continue
        if node.op == "output":
            outputs = [a.name for a in node.all_input_nodes if a.name not in weights]
            continue
        if node.op != "call_function":
            continue
        args = node.all_input_nodes
        acts = [a.name for a in args if a.name not in weights]
        used_weights = [a.name for a in args if a.name in weights]
        if used_weights and not acts:  # computed from weights alone (a transpose, a dequantize): a weight
            weights[node.name] = weights[used_weights[0]]
            if used_weights[0] in bits:
                bits[node.name] = bits[used_weights[0]]
            continue
        if _is_view(node.target) and acts:
            aliases[node.name] = acts[0]
            sizes[node.name] = 0
        else:
            sizes[node.name] = _tensor_bytes(node.meta.get("val"))
        op = Op(node.name, str(node.target), _layer(node), acts, [node.name], used_weights)
        op.macs, op.mac_weight = torch_node_macs(node, weights)
        ops.append(op)
    graph = OpGraph(ops, sizes, aliases, inputs, outputs, weights, "torch.export", weight_bits=bits)
    if weight_bits and _integer_activations(ep, ops, sizes, aliases):
        graph.notes.append("quantized activations counted at 1 byte (integer kernels write them directly)")
    return graph
