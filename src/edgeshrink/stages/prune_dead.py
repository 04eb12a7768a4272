"""Weights that feed nothing: the prune stage's `dead_units = "respend"`.

A unit (an output channel) of a pruned layer whose every reader has pruned all of its weights on it
computes a value that no later layer reads, so the weights into it are stored and trained for nothing;
at 99% sparsity they are a tenth of LeNet-5's fc1. With `respend`, each round's magnitude masks are
adjusted: the weights into such units are pruned too, and the layer keeps as many of its next-largest
weights elsewhere instead (never one pruned in an earlier round), so the same number of weights does
more. Removing a dead unit's inputs leaves the function exactly as it was; repeated to a fixed point
(emptying a unit can leave the units before it unread).

Who reads a unit comes from torch-pruning's dependency graph (the layers whose input channels follow the
unit's output channel, through flattening, concatenation and elementwise ops). A unit counts only where
the graph is simple enough to be sure: its readers are plain Linear or Conv layers, and the channel
passes nothing that mixes channels (normalisation over features, attention, recurrence, grouped
convolutions). Because torch-pruning treats an operation it does not know as elementwise, each group is
also checked once on a probe batch: with its readers' weights on it zeroed, the outputs must not move
when the weights into the units are replaced by random ones. A group that fails is left alone, with a
note.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeshrink.architecture import coupled_group, dependency_graph
from edgeshrink.weights import baked_copy, top_magnitude_mask

_PLAIN = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class Readers:
    """The layers that write a group of units (the root and any layer coupled to it) and, for each
    reader, which of its input channels carry which unit."""

    writers: list[str]
    reads: list[tuple[str, torch.Tensor, torch.Tensor]]  # (reader, input channel, unit it carries)
    units: int


def _plain(module: nn.Module) -> bool:
    return isinstance(module, _PLAIN) and getattr(module, "groups", 1) == 1


def _readers_of(graph, root: nn.Module, names: dict[nn.Module, str]) -> Readers | None:
    pruner = graph.get_pruner_of_module(root)
    units = pruner.get_out_channels(root) if pruner is not None else None
    if not units:
        return None
    try:
        group = coupled_group(graph, root, range(units))
    except (IndexError, KeyError, RuntimeError, ValueError):  # ValueError: also a RunawayGroup (a matmul)
        return None
    writers, reads = [], []
    for item in group.items:
        module, out = item.dep.target.module, graph.is_out_channel_pruning_fn(item.dep.handler)
        if not isinstance(module, nn.Module) or type(module).__module__.startswith("torch_pruning"):
            continue  # torch-pruning's own nodes: elementwise, reshape, concatenation, split
        if out and _plain(module):
            writers.append(names[module])
        elif out and isinstance(module, _NORMS):
            continue  # per-channel: an unread channel stays unread
        elif not out and _plain(module):
            channels, carried = torch.tensor(item.idxs), torch.tensor(item.root_idxs)
            if channels.numel() and (channels.max() >= module.weight.shape[1] or carried.max() >= units):
                return None  # mapped through an op that changes the channel count (a pixel shuffle)
            reads.append((names[module], channels, carried))
        else:
            return None  # a layer that mixes channels (or one torch-pruning maps unclearly): leave it
    return Readers(writers, reads, units) if reads and writers else None


def find_readers(model: nn.Module, layers: list[tuple[str, nn.Module]], input_shape) -> list[Readers]:
    """The unit groups of the pruned layers whose readers are known (see the module docstring); raises
    what torch-pruning raises when it cannot trace the model."""
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    graph = dependency_graph(model, input_shape)
    found, seen = [], set()
    for _, module in layers:
        if module in seen:
            continue
        readers = _readers_of(graph, module, names)
        if readers is not None:
            seen.update(modules[w] for w in readers.writers)
            found.append(readers)
    return found


def _unread(r: Readers, pattern: dict[str, torch.Tensor]) -> torch.Tensor:
    """True for the units that no reader has a weight on, given each layer's kept (nonzero) pattern."""
    read = torch.zeros(r.units, dtype=torch.bool)
    for reader, channels, units in r.reads:
        on_channel = pattern[reader].transpose(0, 1).reshape(pattern[reader].shape[1], -1).any(1)
        read[units[on_channel[channels]]] = True
    return ~read


def respend(masks: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], readers: list[Readers], patterns) -> None:
    """Adjust `masks` (layer -> this round's keep mask) in place: no kept weight into an unread unit, the
    layer's count kept by its next-largest live weights. `patterns` gives the nonzero pattern of layers
    without a mask this round."""
    for _ in range(len(readers) + 1):
        changed = False
        for r in readers:
            dead = _unread(r, {**patterns, **masks})
            if not dead.any():
                continue
            for w in r.writers:
                if w not in masks or not masks[w][dead].any():
                    continue
                magnitude = weights[w].abs().clone()
                magnitude[dead] = 0
                keep = min(int(masks[w].sum()), int((magnitude > 0).sum()))
                masks[w] = top_magnitude_mask(magnitude, keep) & (magnitude > 0)
                changed = True
        if not changed:
            break


def unread_note(model: nn.Module, readers: list[Readers]) -> str | None:
    """How many units of each layer nothing reads any more (their inputs respent), for the stage notes."""
    patterns = {n: m.weight.detach() != 0 for n, m in model.named_modules() if isinstance(m, _PLAIN)}
    parts = [f"{'/'.join(r.writers)} {int(_unread(r, patterns).sum())} of {r.units}" for r in readers]
    return "dead units (nothing reads them; their weights respent): " + ", ".join(parts) if parts else None


@torch.no_grad()
def _outputs_ignore_units(model: nn.Module, r: Readers, probe: torch.Tensor) -> bool:
    """Whether, once every reader's weights on the units are zero, the outputs no longer depend on the
    units at all: the writers' weights into them are replaced by random ones and the outputs compared."""
    plain = baked_copy(model).eval()
    for reader, channels, _ in r.reads:
        plain.get_submodule(reader).weight[:, channels] = 0
    before = plain(probe)
    generator = torch.Generator().manual_seed(0)
    for w in r.writers:
        module = plain.get_submodule(w)
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
        if module.bias is not None:
            module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    after = plain(probe)
    scale = float(before.abs().max()) or 1.0
    return bool(torch.allclose(before, after, rtol=0.0, atol=1e-5 * scale))


def verified(model: nn.Module, readers: list[Readers], probe: torch.Tensor) -> tuple[list[Readers], list[str]]:
    """The groups whose units really reach the outputs only through their readers (checked on `probe`);
    notes name the others, which keep their dead units."""
    kept, notes = [], []
    for r in readers:
        if _outputs_ignore_units(model, r, probe):
            kept.append(r)
        else:
            notes.append(
                f"dead units: {', '.join(r.writers)} reach the outputs other than through "
                f"{', '.join(x[0] for x in r.reads)} (an operation the dependency graph does not see); left alone"
            )
    return kept, notes
