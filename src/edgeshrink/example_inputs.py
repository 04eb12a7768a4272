"""The inputs edgeshrink makes up to trace a model (torch-pruning's dependency graph, MAC counts, forward
hooks): zeros of the recorded shape, in the input's own dtype when it is not floating point."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class InputShape(tuple):
    """One example's shape without the batch dimension, carrying the input's dtype when it is not floating
    point (token ids into an Embedding): the tracers that feed a zero input (torch-pruning's graph, MAC
    counts, hooks) then feed zero ids, where a float zero would fail inside `F.embedding`."""

    dtype: torch.dtype | None

    def __new__(cls, dims: Sequence[int], dtype: torch.dtype | None = None) -> InputShape:
        shape = super().__new__(cls, (int(d) for d in dims))
        shape.dtype = None if dtype is None or dtype.is_floating_point else dtype
        return shape

    @classmethod
    def of(cls, example: torch.Tensor) -> InputShape:
        """The shape and dtype of a batch of inputs."""
        return cls(example.shape[1:], example.dtype)

    @property
    def dtype_name(self) -> str | None:
        return None if self.dtype is None else str(self.dtype).removeprefix("torch.")


def zero_input(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> torch.Tensor:
    """A zero batch for tracing `model`: the input's own dtype when `input_shape` records one (token ids),
    else the dtype of the model's parameters."""
    dtype = getattr(input_shape, "dtype", None)
    if dtype is None:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
    return torch.zeros(batch_size, *input_shape, dtype=dtype)
