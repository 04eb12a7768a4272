"""What a saved model records about its architecture (`Arch`), and how channel edits are replayed.

An `Arch` (in checkpoints, containers and report.json) names a zoo model and its options, or says
nothing about the model (a user's own class, rebuilt from a fresh instance the user passes):

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

from collections.abc import Sequence
from typing import Any, Literal
from unittest import mock

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from edgeshrink.errors import ArchitectureMismatchError, ConfigError, FormatError, UnsupportedLayerError
from edgeshrink.example_inputs import InputShape, zero_input
from edgeshrink.reparametrizations import fold_reparametrizations


class ChannelEdit(BaseModel):
    """Channels removed from one layer's outputs or inputs, numbered in its shape at that moment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layer: str
    dim: Literal["out", "in"]
    removed: list[int]


class ChannelEdits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    input_shape: list[int]
    input_dtype: str | None = None  # an input that is not floating point: "int64" for token ids
    edits: list[ChannelEdit] = []


def recorded_shape(channels: ChannelEdits) -> InputShape:
    """The input shape (and dtype) channel edits were recorded with."""
    dtype = getattr(torch, channels.input_dtype, None) if channels.input_dtype else None
    if channels.input_dtype and not isinstance(dtype, torch.dtype):
        raise FormatError(f"channel edits record input dtype {channels.input_dtype!r}, which is not a torch dtype")
    return InputShape(channels.input_shape, dtype)


class Arch(BaseModel):
    """How to rebuild a model's architecture: a zoo name with options and channel edits, or nothing
    (a user's own model) with the channel edits alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str | None = None
    model: str | None = None
    model_kwargs: dict[str, Any] = {}
    input_shape: list[int] | None = None
    channels: ChannelEdits | None = None

    @classmethod
    def parse(cls, data: Arch | dict | None, source: str = "arch") -> Arch:
        """An Arch from a file's or caller's dict (None: nothing known), with a one-line error."""
        if isinstance(data, Arch):
            return data
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise FormatError(f"{source}: the architecture record is not valid ({where}: {err['msg']})") from None

    def to_dict(self) -> dict | None:
        """The JSON form files store (None when nothing is known)."""
        out = self.model_dump(mode="json", exclude_none=True)
        if not out.get("model_kwargs"):
            out.pop("model_kwargs", None)
        return out or None

    @property
    def edit_count(self) -> int:
        return len(self.channels.edits) if self.channels else 0

    def with_channel_edits(self, input_shape: Sequence[int], edits: list[ChannelEdit]) -> Arch:
        """A copy with `edits` appended to its channel edits (started when there were none)."""
        shape = [int(d) for d in input_shape]
        if self.channels is not None and list(self.channels.input_shape) != shape:
            raise ConfigError(
                f"channel edits were recorded with input shape {self.channels.input_shape}, now {shape}: "
                "use the same example input for every channels stage"
            )
        before = list(self.channels.edits) if self.channels else []
        dtype = getattr(input_shape, "dtype_name", None)
        channels = ChannelEdits(input_shape=shape, input_dtype=dtype, edits=before + list(edits))
        return self.model_copy(update={"channels": channels})


FIXED_WIDTH_LAYERS = (nn.MultiheadAttention, nn.RNNBase)  # widths tied to heads and gates torch-pruning mis-maps


def dependency_graph(model: nn.Module, input_shape: Sequence[int]) -> Any:
    """torch-pruning's DependencyGraph of `model`, traced with one zero input (`zero_input`; training mode
    restored).

    Raises UnsupportedLayerError, not torch-pruning's internal traceback, when it cannot trace the model
    (it fails inside its own concatenation mapping on a bidirectional or multi-layer LSTM, for one)."""
    import torch_pruning as tp

    was_training = model.training
    example = zero_input(model, input_shape)
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # noqa: BLE001 - any failure inside the tracer means the same to the user
        fix = "remove the channels stage and use the prune stage (unstructured) on this model"
        raise UnsupportedLayerError(untraceable(model, exc, fix)) from exc
    finally:
        model.train(was_training)
    return graph


class RunawayGroup(ValueError):
    """torch-pruning's index mapping did not settle while following one group."""


def coupled_group(graph: Any, module: nn.Module, channels: Sequence[int]) -> Any:
    """torch-pruning's group of everything coupled to `module`'s output `channels`, or RunawayGroup when the
    search outgrows any group the graph can hold (four times the widest parameter dimension or the node count:
    a flattened feature map reaches a Linear's inputs). Through a matmul or einsum between two activations
    torch-pruning maps channel indices back onto themselves through reshapes and follows the cycle with ever
    longer index lists (65,536 for a 16-channel conv, until 24 GiB of memory ran out)."""
    from torch_pruning.dependency.group import Group

    widest = max(
        (max(p.shape) for m in graph.module2node if isinstance(m, nn.Module) for p in m.parameters()), default=1
    )
    limit = 4 * max(widest, len(graph.module2node))
    add_dep = Group.add_dep

    def bounded(group, dep, idxs):
        if len(idxs) > limit or len(group._group) > limit:
            raise RunawayGroup(f"the group of {type(module).__name__} outgrew {limit} channel indices")
        return add_dep(group, dep, idxs)

    with mock.patch.object(Group, "add_dep", bounded):
        return graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels, list(channels))


def untraceable(model: nn.Module, exc: Exception, fix: str) -> str:
    """Why torch-pruning could not trace or couple `model`'s channels (naming the layer types that usually
    cause it), and `fix`."""
    suspects = sorted({type(m).__name__ for m in model.modules() if isinstance(m, FIXED_WIDTH_LAYERS)})
    cause = f" (the model has {', '.join(suspects)} layers, whose channels it cannot couple)" if suspects else ""
    first = (str(exc).splitlines() or [""])[0][:100]
    return (
        f"channels: torch-pruning cannot trace the channel dependencies of this model{cause}: "
        f"{type(exc).__name__} {first}; {fix}"
    )


def edits_from_history(history: Sequence[Sequence[Any]]) -> list[ChannelEdit]:
    """torch-pruning's `pruning_history()` entries as data."""
    return [
        ChannelEdit(layer=str(name), dim="out" if is_out else "in", removed=[int(i) for i in idxs])
        for name, is_out, idxs in history
    ]


def replay_channel_edits(model: nn.Module, channels: ChannelEdits, skip: int = 0) -> nn.Module:
    """Apply recorded channel edits (all but the first `skip`, already applied) to `model`, in place."""
    edits = channels.edits[skip:]
    if not edits:
        return model
    names = {name for name, _ in model.named_modules()}
    for e in edits:
        if e.layer not in names:
            raise ArchitectureMismatchError(
                f"channel edits name layer {e.layer!r}, which this model does not have; "
                "rebuild from the architecture the edits were recorded on"
            )
    graph = dependency_graph(model, recorded_shape(channels))
    try:
        graph.load_pruning_history([[e.layer, e.dim == "out", list(e.removed)] for e in edits])
    except (IndexError, RuntimeError) as exc:
        raise ArchitectureMismatchError(
            f"channel edits do not fit this model ({str(exc).splitlines()[0][:100]}); "
            "rebuild from the architecture the edits were recorded on"
        ) from None
    return model


def fits_state(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether every tensor of `model` has the shape the stored tensors have."""
    expected = model.state_dict()
    return bool(expected) and all(k in shapes and shapes[k] == tuple(v.shape) for k, v in expected.items())


def build_architecture(
    arch: Arch, model: nn.Module | None = None, shapes: dict[str, tuple[int, ...]] | None = None
) -> nn.Module:
    """The model an `Arch` describes, with fresh weights and its channel edits replayed.

    `model`: a fresh instance of the original architecture (required for models outside the zoo); without
    it the zoo model `arch.model` is created with `arch.model_kwargs`. When `model` already has the
    stored tensors' `shapes` (it is the pruned architecture itself), no edit is replayed. A passed model's
    weight_norm and the like are folded first, as `compress` folded them before storing the plain tensors.
    """
    if model is None:
        if arch.model is None:
            raise ConfigError(
                "the file records no zoo model to rebuild: pass a fresh instance of the architecture (model=...)"
            )
        from edgeshrink.models import create_model

        shape = tuple(arch.input_shape) if arch.input_shape else None
        model = create_model(arch.model, input_shape=shape, **arch.model_kwargs)
    else:
        fold_reparametrizations(model)  # compress stored the plain tensors weight_norm and the like computed
    if arch.channels is not None and not (shapes is not None and fits_state(model, shapes)):
        replay_channel_edits(model, arch.channels)
    return model
