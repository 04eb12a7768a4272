"""Half precision: a wrapper that runs a model in float16 with float32 inputs and outputs."""

from __future__ import annotations

import torch
from torch import nn


class HalfPrecision(nn.Module):
    """Runs the wrapped model in float16 and hands float32 in and out, so callers feed the same data."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half() if x.is_floating_point() else x).float()


def is_half(model: nn.Module) -> bool:
    return isinstance(model, HalfPrecision)
