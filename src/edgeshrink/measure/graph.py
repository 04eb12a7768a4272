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

from edgeshrink.measure import macs as mac_rules


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

    def weight_bytes(self, op: Op) -> int:
        return sum(self.weights[w].nbytes for w in op.weights)


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of the model with masks and codebooks baked into plain tensors (what gets exported)."""
    from edgeshrink.weights import baked_copy

    return baked_copy(model).eval()


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


def from_torch(model: nn.Module, example: torch.Tensor) -> OpGraph:
    """Export the model with torch.export (batch as in `example`) and read its operations."""
    model = plain_copy(model)
    with torch.no_grad():
        ep = torch.export.export(model, (example,))
    sig = ep.graph_signature
    weight_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    tensors = {**ep.state_dict, **ep.constants}
    weights: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    aliases: dict[str, str] = {}
    inputs: list[str] = []
    outputs: list[str] = []
    ops: list[Op] = []
    for node in ep.graph.nodes:
        if node.op == "placeholder":
            if node.name in weight_of:
                value = tensors[weight_of[node.name]]
                weights[node.name] = value.detach().float().numpy() if value.is_floating_point() else value.numpy()
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
            continue
        if _is_view(node.target) and acts:
            aliases[node.name] = acts[0]
            sizes[node.name] = 0
        else:
            sizes[node.name] = _tensor_bytes(node.meta.get("val"))
        op = Op(node.name, str(node.target), _layer(node), acts, [node.name], used_weights)
        op.macs, op.mac_weight = mac_rules.torch_node_macs(node, weights)
        ops.append(op)
    return OpGraph(ops, sizes, aliases, inputs, outputs, weights, "torch.export")
