"""What a saved model records about its architecture, and how a model is rebuilt from that alone.

An `arch` dict (in checkpoints, containers and report.json) names a zoo model and its options:

    {"task": "fashion-resnet8x4", "model": "resnet8", "model_kwargs": {"width": 4},
     "input_shape": [1, 28, 28],                      # optional: size the zoo model for this input
     "channels": {"input_shape": [1, 28, 28],         # structural edits, replayed in order
                  "edits": [{"layer": "stem.0", "dim": "out", "removed": [3, 17, ...]}, ...]}}

Channel edits are torch-pruning's pruning history written as data: each entry removes channel indices
(numbered in the layer's shape at that moment) from one layer's outputs ("out") or inputs ("in"),
and the dependency graph removes the coupled channels of every other layer with it (BatchNorm,
depthwise convolutions, residual additions, concatenations, the next layer's inputs). Replaying the
entries on a fresh instance of the original architecture gives the pruned architecture: no pickles,
no hand-written model class.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from edgeshrink.errors import ArchitectureMismatchError, ConfigError


def dependency_graph(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """torch-pruning's DependencyGraph of `model`, traced with one zero input (training mode restored)."""
    import torch_pruning as tp

    was_training = model.training
    example = torch.zeros(1, *input_shape, dtype=next(model.parameters()).dtype)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    model.train(was_training)
    return graph


def edits_from_history(history: Sequence[Sequence[Any]]) -> list[dict]:
    """torch-pruning's `pruning_history()` entries as JSON-ready dicts."""
    return [
        {"layer": str(name), "dim": "out" if is_out else "in", "removed": [int(i) for i in idxs]}
        for name, is_out, idxs in history
    ]


def history_from_edits(edits: Sequence[dict]) -> list[list]:
    """The inverse of `edits_from_history`, checking every entry."""
    out = []
    for i, e in enumerate(edits):
        if not isinstance(e, dict) or set(e) != {"layer", "dim", "removed"} or e["dim"] not in ("out", "in"):
            raise ArchitectureMismatchError(f"channel edit {i} is malformed: {e!r}")
        out.append([e["layer"], e["dim"] == "out", [int(j) for j in e["removed"]]])
    return out


def replay_channel_edits(model: nn.Module, channels: dict) -> nn.Module:
    """Apply recorded channel edits (an arch's "channels" entry) to a fresh, unpruned `model`, in place."""
    graph = dependency_graph(model, channels["input_shape"])
    names = {name for name, _ in model.named_modules()}
    history = history_from_edits(channels["edits"])
    for name, _, _ in history:
        if name not in names:
            raise ArchitectureMismatchError(
                f"channel edits name layer {name!r}, which this model does not have; "
                "rebuild from the architecture the edits were recorded on"
            )
    try:
        graph.load_pruning_history(history)
    except (IndexError, RuntimeError) as exc:
        raise ArchitectureMismatchError(
            f"channel edits do not fit this model ({str(exc).splitlines()[0][:100]}); "
            "rebuild from the architecture the edits were recorded on"
        ) from None
    return model


def with_channel_edits(arch: dict | None, input_shape: Sequence[int], edits: list[dict]) -> dict:
    """A copy of `arch` with `edits` appended to its channel edits (started when there were none)."""
    arch = copy.deepcopy(arch) if arch else {}
    channels = arch.setdefault("channels", {"input_shape": [int(d) for d in input_shape], "edits": []})
    if list(channels["input_shape"]) != [int(d) for d in input_shape]:
        raise ConfigError(
            f"channel edits were recorded with input shape {channels['input_shape']}, now {list(input_shape)}: "
            "use the same example input for every channels stage"
        )
    channels["edits"].extend(edits)
    return arch


def _fits(model: nn.Module, state: dict[str, torch.Tensor] | None) -> bool:
    if state is None:
        return False
    expected = model.state_dict()
    return all(k in state and tuple(state[k].shape) == tuple(v.shape) for k, v in expected.items())


def build_from_arch(
    arch: dict | None, model: nn.Module | None = None, state: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """The model an `arch` describes, ready for `load_into`.

    `model`: a fresh instance of the original architecture (for models outside the zoo); without it
    the zoo model `arch["model"]` is created with `arch["model_kwargs"]`. Recorded channel edits are
    then replayed, unless `model` already has the shapes of `state` (it is the pruned model itself).
    """
    arch = arch or {}
    if model is None:
        if "model" not in arch:
            raise ConfigError("the file records no zoo model to rebuild: pass a fresh instance of the architecture")
        from edgeshrink.models import create_model

        shape = arch.get("input_shape")
        model = create_model(arch["model"], input_shape=tuple(shape) if shape else None, **arch.get("model_kwargs", {}))
    if arch.get("channels") and not _fits(model, state):
        replay_channel_edits(model, arch["channels"])
    return model
