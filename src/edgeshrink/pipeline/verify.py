"""The check `compress` runs on the file it wrote: decode it, compare every stored tensor bit for bit,
rebuild the model from the file with `io.load` (the same path every command takes) and require it to
compute exactly what the compressed model computes."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.errors import EdgeshrinkError, FormatError
from edgeshrink.io import read_stored, to_artifact
from edgeshrink.io.storage import storage_state


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1), b.reshape(-1))


def check_written(
    path, artifact: Artifact, template: nn.Module, skip_edits: int, batch: torch.Tensor | None
) -> Artifact:
    """The artifact rebuilt from the file at `path`, after checking it against `artifact`.

    A zoo model is rebuilt from the file alone; a user's model from `template` (a fresh copy of the model
    given to compress, with its first `skip_edits` channel edits already applied)."""
    stored = read_stored(path)
    expected, _ = storage_state(artifact)
    for name, tensor in expected.items():
        got = stored.state.get(name)
        if got is None or not _same(got, tensor.contiguous()):
            raise FormatError(f"internal error: tensor {name!r} did not decode bit-exactly; please report it")
    try:
        loaded = to_artifact(
            stored, None if artifact.arch.model else template, 0 if artifact.arch.model else skip_edits
        )
    except EdgeshrinkError as exc:
        if artifact.arch.model:
            raise type(exc)(
                f"the model given to compress does not match the zoo model its arch names "
                f"({artifact.arch.model!r}): {exc}. Pass arch=None for your own model"
            ) from None
        raise
    if batch is not None:
        # the same memory layout on both sides: a channels-last model runs other (equally exact) kernels
        reference = copy.deepcopy(artifact.model).to(memory_format=torch.contiguous_format).eval()
        with torch.no_grad(), requires_grad_off(loaded.model, reference):
            same = torch.equal(loaded.model(batch.contiguous()), reference(batch.contiguous()))
        if not same:
            raise FormatError(
                "internal error: the model rebuilt from the file computes other numbers; please report it"
            )
    return loaded


@contextlib.contextmanager
def requires_grad_off(*models: nn.Module) -> Iterator[None]:
    """Every parameter's requires_grad off, restored after. A weight that requires grad changes how torch.matmul
    folds a 3-D input (another order of summation, 1e-7 apart), even under no_grad: a masked or shared weight is
    computed by its parametrization and does not, the same weight loaded as a plain parameter does."""
    flags = [(p, p.requires_grad) for model in models for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
