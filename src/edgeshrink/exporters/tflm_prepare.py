"""Prepare a float model for TFLite Micro's weight formats, before int8 conversion. Two passes, each
leaving the function the model computes unchanged:

- `restore_codebooks`: a layer whose weights take few distinct values (weight sharing, as a loaded
  container holds them: plain tensors) gets its codebook back, so quantization puts the whole tensor on
  one integer grid: the shared values stay few (LUT and Huffman alphabets of 2^bits symbols instead of up
  to 255), and one scale replaces one per channel (12 bytes per channel per tensor in the flatbuffer).
- `drop_dead_inputs`: a Linear whose weight has all-zero columns
becomes a GATHER of the inputs it uses followed by a narrower Linear. The function is unchanged (the
dropped terms were zeros times inputs) and the file shrinks: TFLM's DECODE formats spend at least one bit
per stored weight, zero or not, so a column of zeros still costs its height in bits (LeNet-300-100 after
deep-compression: 293 of fc1's 784 input pixels are never read).

Used on float models before int8 conversion (the PTQ that follows sees the narrower layer); a model that
is already quantized keeps its layers (its scales belong to the full-width weights).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.weights import attach_codebook, attach_mask, get_mask, get_shared, prunable_weights

MAX_SHARED_VALUES = 64  # a layer with at most this many distinct nonzero weights counts as shared
MIN_DEAD_FRACTION = 0.05  # below this the GATHER's int32 indices cost more than the bits they save


class GatheredLinear(nn.Module):
    """`linear(x[..., index])`: a Linear that reads only the inputs listed in `index`. The inner layer keeps
    the replaced layer's attribute name, so converted files name its tensors after it (fc1, not linear)."""

    def __init__(self, index: torch.Tensor, linear: nn.Linear, name: str) -> None:
        super().__init__()
        self.register_buffer("index", index.to(torch.int32))
        self.inner = name
        self.add_module(name, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.inner)(torch.index_select(x, -1, self.index))


def _narrow(linear: nn.Linear, cols: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> nn.Linear:
    """The layer restricted to input columns `cols` and output rows `rows` (None: all), its mask and
    codebook kept (a shared layer stays on its codebook, so quantization keeps it on one integer grid)."""
    cols = torch.arange(linear.in_features) if cols is None else cols
    rows = torch.arange(linear.out_features) if rows is None else rows
    out = nn.Linear(int(cols.numel()), int(rows.numel()), bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[rows][:, cols])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[rows])
    shared, mask = get_shared(linear), get_mask(linear)
    if shared is not None:
        attach_codebook(out, "weight", shared.centroids, shared.assignment[rows][:, cols])
    elif mask is not None:
        attach_mask(out, "weight", mask[rows][:, cols])
    return out


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _plain_linear(module: nn.Module) -> bool:
    """An nn.Linear called as a module (parametrized or not); not a subclass such as attention's out_proj."""
    cls = type(module)
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]
    return cls is nn.Linear


def drop_dead_inputs(model: nn.Module) -> list[str]:
    """Rewrite, in place, every Linear with enough all-zero weight columns; returns one note per layer."""
    notes = []
    for name, module in list(model.named_modules()):
        if not name or not _plain_linear(module):
            continue
        used = module.weight.detach().ne(0).any(dim=0)
        dead = int((~used).sum())
        if dead < MIN_DEAD_FRACTION * module.in_features or dead == module.in_features:
            continue
        keep = torch.nonzero(used).flatten()
        _replace(model, name, GatheredLinear(keep, _narrow(module, cols=keep), name.rpartition(".")[2]))
        notes.append(f"{name}: {dead} of {module.in_features} inputs have only zero weights: gathered away")
    return notes


def restore_codebooks(model: nn.Module) -> list[str]:
    """Attach a codebook (its distinct nonzero values) to every conv / linear layer with at most
    MAX_SHARED_VALUES of them and no parametrization yet; returns one note per layer."""
    notes = []
    for name, module in prunable_weights(model):
        if parametrize.is_parametrized(module, "weight"):
            continue
        w = module.weight.detach()
        values = torch.unique(w[w != 0])
        if values.numel() == 0 or values.numel() > MAX_SHARED_VALUES or values.numel() * 4 > w.numel():
            continue
        assignment = torch.where(w != 0, torch.searchsorted(values, w.contiguous()), torch.full_like(w, -1).long())
        attach_codebook(module, "weight", values, assignment)
        notes.append(f"{name}: {values.numel()} shared values: quantized on one grid for the whole tensor")
    return notes


_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
    nn.Identity,
)
_ELEMENTWISE_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu, torch.tanh, torch.sigmoid)


def _feeding_linear(node, modules: dict) -> str | None:
    """The Linear whose output reaches `node` only through per-feature elementwise ops used once."""
    prev = node.args[0] if node.args else None
    while prev is not None and len(prev.users) == 1:
        if prev.op == "call_module" and _plain_linear(modules[prev.target]):
            return prev.target
        elementwise = (prev.op == "call_module" and isinstance(modules[prev.target], _ELEMENTWISE_MODULES)) or (
            prev.op == "call_function" and prev.target in _ELEMENTWISE_FUNCTIONS
        )
        if not elementwise:
            return None
        prev = prev.args[0] if prev.args else None
    return None


def drop_dead_outputs(model: nn.Module) -> list[str]:
    """Where Linear B's all-zero weight columns read outputs of a Linear A that feeds only B (through
    elementwise ops), remove those outputs from A and those columns from B: A's rows were computed for
    nothing. Models that torch.fx cannot trace are left as they are."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - data-dependent control flow: no rewrite, nothing claimed
        return []
    modules = dict(model.named_modules())
    notes = []
    for node in graph.nodes:
        if node.op != "call_module" or not _plain_linear(modules[node.target]):
            continue
        source = _feeding_linear(node, modules)
        consumer = modules[node.target]
        used = consumer.weight.detach().ne(0).any(dim=0)
        if source is None or bool(used.all()) or not bool(used.any()):
            continue
        if modules[source].out_features != consumer.in_features:
            continue
        keep = torch.nonzero(used).flatten()
        _replace(model, source, _narrow(modules[source], rows=keep))
        _replace(model, node.target, _narrow(consumer, cols=keep))
        modules = dict(model.named_modules())
        notes.append(
            f"{source}: {int((~used).sum())} of {consumer.in_features} outputs never read by {node.target}: removed"
        )
    return notes
