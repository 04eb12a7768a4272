"""Channels-last memory for the training and evaluation loops, where the model's own forward allows it.

Channels-last makes convolutions about 2x faster on x86 CPUs, but it changes the strides of every activation, and
a forward that calls `view` on one (`x.view(x.size(0), -1)` after a convolution, the textbook flatten) then fails
with "view size is not compatible with input tensor's size and stride". The layout is ours, not the user's: the
loops try it on one small batch first and keep the model's own layout when its forward refuses it."""

from __future__ import annotations

import contextlib
import copy
import io
import weakref

import torch
from torch import nn

# model -> whether its forward runs on channels-last activations (decided once per model object)
_RUNS_CHANNELS_LAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def uses_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@torch.no_grad()
def runs_channels_last(model: nn.Module, inputs: torch.Tensor) -> bool:
    """Whether `model` is a conv net whose forward runs on channels-last activations: tried once per model object,
    on a copy (the model's weights, statistics and any state its forward keeps stay untouched) in eval mode with
    its weights in channels-last too, as the training loop runs it (a 1-channel input alone would not change the
    layout), on two rows of `inputs`. A forward that fails that way, or a model that cannot be copied, is left to
    the caller to run in the model's own layout."""
    if not uses_conv2d(model) or not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        return False
    known = _RUNS_CHANNELS_LAST.get(model)
    if known is not None:
        return known
    try:
        trial = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
        with contextlib.redirect_stderr(io.StringIO()):  # a traced module prints its failing line before raising
            trial(inputs[:2].contiguous(memory_format=torch.channels_last))
        ok = True
    except Exception:  # noqa: BLE001 - any failure means: keep the model's own layout, where it is the user's code
        ok = False
    _RUNS_CHANNELS_LAST[model] = ok
    return ok


def to_channels_last(model: nn.Module, inputs: torch.Tensor) -> bool:
    """Switch `model`'s weights to channels-last when its forward runs that way; returns whether it did."""
    if not runs_channels_last(model, inputs):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def to_contiguous(model: nn.Module) -> None:
    """The model's weights back in the default layout (what the user, the exporters and `state_dict` expect)."""
    model.to(memory_format=torch.contiguous_format)


def prepare_inputs(inputs: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A batch in channels-last memory when the loop runs that way (4-D inputs only)."""
    if channels_last and isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
        return inputs.contiguous(memory_format=torch.channels_last)
    return inputs


class LoopLayout:
    """A training loop's memory layout, decided at its first batch (never by drawing a batch ahead, which would
    move a shuffling loader's random numbers): channels-last when the model's forward, and the teacher's it is
    distilled from, run that way (the teacher's weights too: its convolutions then skip a weight reorder per
    batch). `restore` hands both back in the standard layout."""

    def __init__(self, model: nn.Module, teacher: nn.Module | None = None) -> None:
        self.model, self.teacher = model, teacher
        self.channels_last: bool | None = None

    def batch(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last is None:
            teacher_ok = self.teacher is None or runs_channels_last(self.teacher, inputs)
            self.channels_last = teacher_ok and to_channels_last(self.model, inputs)
            if self.channels_last and self.teacher is not None:
                self.teacher.to(memory_format=torch.channels_last)
        return prepare_inputs(inputs, self.channels_last)

    def restore(self) -> None:
        if self.channels_last:
            for module in (self.model, self.teacher):
                if module is not None:
                    to_contiguous(module)
