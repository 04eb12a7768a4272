"""Channel groups on torch-pruning's dependency graph: which output channels must be removed together,
how important each channel is, and removing the least important ones.

A group is every layer whose channels are coupled with one layer's output channels: its BatchNorm,
a following depthwise convolution, every branch of a residual addition, the slice of a concatenation,
the next layers' inputs. Removing channel i of a group removes it from all of them, so the model
stays valid. Groups with an excluded layer (or the classifier, whose outputs are the classes) are
left alone.
"""

from __future__ import annotations

import copy
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from edgeshrink.architecture import FIXED_WIDTH_LAYERS, coupled_group, dependency_graph, untraceable
from edgeshrink.errors import ConfigError, UnsupportedLayerError
from edgeshrink.example_inputs import zero_input
from edgeshrink.mac_count import count_macs, layer_macs

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ChannelGroup:
    """Layers whose output channels are removed together, indexed by the root layer's output channels."""

    root: str
    layers: list[str]
    channels: int
    channel_groups: int = 1  # grouped convolutions: the same channels leave every group
    importance: torch.Tensor | None = None


def forward_with_hooks(model: nn.Module, input_shape: Sequence[int], modules: list[nn.Module], hook) -> None:
    """One eval-mode forward pass on a zero input with `hook` on `modules` (hooks removed, mode restored)."""
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(zero_input(model, input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def classifier_name(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The last weight layer to run in a forward pass: its outputs are the model's outputs."""
    order: list[nn.Module] = []
    forward_with_hooks(model, input_shape, list(model.modules()), lambda mod, _i, _o: order.append(mod))
    names = {m: n for n, m in model.named_modules()}
    layers = [m for m in order if isinstance(m, WEIGHT_LAYERS)]
    if not layers:
        raise ConfigError("channels: the model has no Linear or Conv layers whose channels could be removed")
    return names[layers[-1]]


def fixed_width_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose widths tie many others in ways torch-pruning does not map correctly (attention heads,
    recurrent gates): every group that touches one is left alone."""
    return [m for m in model.modules() if isinstance(m, FIXED_WIDTH_LAYERS)]


def _prunable_groups(graph, ignored: list[nn.Module], fixed: list[nn.Module]):
    """torch-pruning's `get_all_groups`, except that a group touching a fixed-width layer (in any
    dimension), or one whose index mapping torch-pruning cannot follow, is skipped instead of failing
    the whole search."""
    visited: set[nn.Module] = set()
    skipped = set(ignored) | set(fixed) | set(graph.IGNORED_LAYERS_IN_TRACING)
    for module in list(graph.module2node):
        pruner = graph.get_pruner_of_module(module)
        if module in skipped or module in visited or not isinstance(module, WEIGHT_LAYERS) or pruner is None:
            continue
        channels = pruner.get_out_channels(module)
        if channels is None:
            continue
        try:
            group = coupled_group(graph, module, range(channels))
        except (IndexError, KeyError, RuntimeError, ValueError):  # ValueError: also a RunawayGroup (a matmul)
            continue  # coupled through a layer whose channels it cannot map (a recurrent layer's gates)
        outs = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        visited.update(outs)
        if any(m in skipped for m in outs) or any(dep.target.module in fixed for dep, _ in group):
            continue
        if _indices_fit(graph, group):
            yield group


def _indices_fit(graph, group) -> bool:
    """Whether every channel index the group would remove exists in the layer it names. torch-pruning does
    not follow channel splits (F.glu, chunk): it then maps a layer's 16 outputs onto the 8 channels after
    the split, and the group, however scored or pruned, would break the model."""
    for dep, idxs in group:
        module = dep.target.module
        pruner = graph.get_pruner_of_module(module) if isinstance(module, nn.Module) else None
        if pruner is None or not idxs:
            continue
        out = graph.is_out_channel_pruning_fn(dep.handler)
        count = pruner.get_out_channels(module) if out else pruner.get_in_channels(module)
        if count is not None and max(int(i) for i in idxs) >= count:
            return False
    return True


def find_groups(model: nn.Module, graph, ignored: list[nn.Module]) -> list[ChannelGroup]:
    """Every group that contains no ignored or fixed-width layer, with its current channel count."""
    names = {m: n for n, m in model.named_modules()}
    groups = []
    try:
        found = list(_prunable_groups(graph, ignored, fixed_width_layers(model)))
    except (IndexError, KeyError, RuntimeError, ValueError) as exc:
        fix = "exclude those layers and the layers feeding them with scope.exclude, or use the prune stage instead"
        raise UnsupportedLayerError(untraceable(model, exc, fix)) from None
    for group in found:
        root = group[0].dep.target.module
        layers, channel_groups = [], 1
        for dep, _ in group:
            module = dep.target.module
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(module, WEIGHT_LAYERS):
                layers.append(names[module])
            if isinstance(module, nn.Conv2d) and 1 < module.groups < max(module.in_channels, module.out_channels):
                channel_groups = max(channel_groups, module.groups)
        groups.append(ChannelGroup(names[root], layers, graph.get_out_channels(root), channel_groups))
    return groups


def _scorer(criterion: str):
    import torch_pruning as tp

    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1)


def _accumulate_gradients(model: nn.Module, batches: list[Batch]) -> None:
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    for inputs, labels in batches:
        F.cross_entropy(model(inputs), labels).backward()
    model.train(was_training)


def score_groups(
    model: nn.Module, graph, groups: list[ChannelGroup], criterion: str, batches: list[Batch] | None
) -> list[str]:
    """Fill each group's per-channel importance; returns notes (groups scored by a fallback criterion).

    l1: mean L1 norm of the channel's weights over the group's layers (Li et al. 2017);
    bn_scale: |BatchNorm scale| (Liu et al. 2017, network slimming; groups without BatchNorm use l1);
    taylor: |weight x gradient| of the loss on a few training batches (Molchanov et al. 2019).
    """
    if criterion == "taylor":
        if not batches:
            raise ConfigError("channels: criterion 'taylor' needs training batches; pass train_loader= or use 'l1'")
        _accumulate_gradients(model, batches)
    scorer, fallback = _scorer(criterion), _scorer("l1")
    modules = dict(model.named_modules())
    notes = []
    with torch.no_grad():
        for g in groups:
            root = modules[g.root]
            full = graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, range(g.channels))
            imp = scorer(full)
            if imp is None:
                imp = fallback(full)
                notes.append(f"{criterion}: group {g.root} has no {criterion} statistics; ranked by l1")
            imp = imp.detach().float().cpu()
            g.importance = imp.view(g.channel_groups, -1).mean(0) if g.channel_groups > 1 else imp
    if criterion == "taylor":
        model.zero_grad(set_to_none=True)
    return notes


def keep_count(original: int, current: int, ratio: float, channel_groups: int = 1, round_to: int = 1) -> int:
    """Channels a group keeps when `ratio` of its `original` channels go: rounded up to a multiple of
    `round_to` and of `channel_groups`, at least one per channel group, never more than it has now."""
    keep = original - round(original * ratio)
    for multiple in (round_to, channel_groups):
        keep = math.ceil(keep / multiple) * multiple
    return min(current, max(keep, channel_groups))


def _lowest(g: ChannelGroup, current: int, keep: int) -> list[int]:
    """Indices of the least important channels to remove so that `keep` remain (equally per channel group)."""
    per_group = current // g.channel_groups
    drop = per_group - keep // g.channel_groups
    order = torch.argsort(g.importance, stable=True)[:drop].tolist()
    return sorted(i + c * per_group for c in range(g.channel_groups) for i in order)


def _plan(model: nn.Module, graph, groups: list[ChannelGroup], ratios, originals, round_to: int):
    """(root module, channel indices to remove) for every group that loses channels under `ratios`."""
    modules = dict(model.named_modules())
    for g in groups:
        if g.root not in ratios:
            continue
        root = modules[g.root]
        current = graph.get_out_channels(root)
        keep = keep_count(originals[g.root], current, ratios[g.root], g.channel_groups, round_to)
        if keep < current:
            yield root, _lowest(g, current, keep)


def remove_channels(
    model: nn.Module,
    graph,
    groups: list[ChannelGroup],
    ratios: dict[str, float],
    originals: dict[str, int],
    round_to: int = 1,
) -> None:
    """Remove the least important channels of every group in `ratios` (fractions of `originals`), in place."""
    for root, idxs in list(_plan(model, graph, groups, ratios, originals, round_to)):
        graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, idxs).prune()


def require_runs(model: nn.Module, input_shape: Sequence[int]) -> None:
    """UnsupportedLayerError when `model` no longer runs after its channels were removed: a forward that
    writes a width as a number (`x.view(-1, 16, 1, 1)`) cannot follow the pruning, and only the user can
    change it. Names the line of the model's code that failed."""
    try:
        forward_with_hooks(model, input_shape, [], None)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, the cause is the same
        raise UnsupportedLayerError(
            f"channels: the model no longer runs once channels are removed ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:120]}){_model_line(exc)}; its forward probably writes a channel "
            "count as a number: take it from the tensor (x.shape[1]), or keep those layers whole with scope.exclude"
        ) from None


def _model_line(exc: BaseException) -> str:
    """' at file:line' of the innermost frame outside torch and edgeshrink (the user's forward), or ''."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not {"torch", "edgeshrink"} & set(Path(f.filename).parts)
    ]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def pruned_copy(
    model: nn.Module,
    groups: list[ChannelGroup],
    ratios: dict[str, float],
    originals: dict[str, int],
    input_shape: Sequence[int],
    round_to: int = 1,
) -> nn.Module:
    """A pruned deep copy (the model itself untouched), for trying an allocation."""
    trial = copy.deepcopy(model)
    remove_channels(trial, dependency_graph(trial, input_shape), groups, ratios, originals, round_to)
    require_runs(trial, input_shape)
    return trial


class MacEstimator:
    """MACs after an allocation, computed without pruning anything, so a search can try many.

    A conv or linear layer's MACs are proportional to its output channels times its input channels per
    group (spatial sizes do not change), so each layer's measured MACs are scaled by the fractions of
    its output and input channels that remain; the dependency graph says how many each group removes
    from each layer (concatenations and flattening included). Depthwise layers lose inputs and outputs
    together and scale once. Exact for the layers counted; tested against `count_macs` after pruning.
    """

    def __init__(self, model: nn.Module, graph, input_shape: Sequence[int]) -> None:
        self.model, self.graph = model, graph
        self.layers: dict[nn.Module, int] = {}

        def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
            self.layers[module] = self.layers.get(module, 0) + layer_macs(module, output)

        forward_with_hooks(model, input_shape, [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)], hook)
        self.other = count_macs(model, input_shape) - sum(self.layers.values())

    def __call__(self, groups: list[ChannelGroup], ratios, originals, round_to: int = 1) -> int:
        removed: dict[tuple[nn.Module, bool], int] = {}
        for root, idxs in self._plan(groups, ratios, originals, round_to):
            group = self.graph.get_pruning_group(root, self.graph.get_pruner_of_module(root).prune_out_channels, idxs)
            for dep, dep_idxs in group:
                if dep.target.module in self.layers:
                    key = (dep.target.module, bool(self.graph.is_out_channel_pruning_fn(dep.handler)))
                    removed[key] = removed.get(key, 0) + len(dep_idxs)
        total = float(self.other)
        for m, macs in self.layers.items():
            out = m.weight.shape[0]
            keep_out = 1 - removed.get((m, True), 0) / out
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.groups > 1 and m.weight.shape[1] == 1:
                total += macs * (1 - max(removed.get((m, True), 0), removed.get((m, False), 0)) / out)
                continue
            in_channels = m.in_channels if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) else m.in_features
            total += macs * keep_out * (1 - removed.get((m, False), 0) / in_channels)
        return round(total)

    def _plan(self, groups, ratios, originals, round_to):
        return list(_plan(self.model, self.graph, groups, ratios, originals, round_to))
