"""A fingerprint of what a saved model computes, so that loading into the wrong model is refused.

At save time the model runs on a seeded random input (zeros for integer inputs, such as token ids);
the file keeps the input's shape and dtype, the first few outputs and the sum of their magnitudes. `check_probe` reruns
the rebuilt model on the same input: a model that is not the one saved (another class, a changed
forward, a missing quantizer) gives other numbers and is refused instead of silently used. The
tolerance (1e-4 relative) absorbs the last-bit differences of other CPUs' kernels.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from edgeshrink.errors import ArchitectureMismatchError, FormatError

HEAD = 4
SEED = 0
BATCH = 2
RTOL = 1e-4


class InputRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    dtype: str


class ProbeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shape: list[int]
    head: list[float]
    abs_sum: float


def parse_records(meta: dict, source: str) -> tuple[InputRecord | None, ProbeRecord | None]:
    """The input and fingerprint records of a file's metadata, checked (FormatError when malformed)."""
    try:
        recorded = InputRecord.model_validate(meta["input"]) if meta.get("input") else None
        probe = ProbeRecord.model_validate(meta["probe"]) if meta.get("probe") else None
    except ValidationError as exc:
        raise FormatError(
            f"{source}: the input or fingerprint record is not valid ({exc.errors()[0]['msg']})"
        ) from None
    if recorded is not None:
        dtype = getattr(torch, recorded.dtype, None)
        if not isinstance(dtype, torch.dtype) or any(d < 0 for d in recorded.shape) or len(recorded.shape) > 8:
            raise FormatError(f"{source}: the recorded input {recorded.shape} {recorded.dtype} is not valid")
        if np.prod(recorded.shape) > 1 << 24:
            raise FormatError(f"{source}: the recorded input {recorded.shape} is implausibly large; damaged file")
    return recorded, probe


def probe_input(shape: list[int], dtype: str) -> torch.Tensor:
    """The deterministic input of the fingerprint."""
    torch_dtype = getattr(torch, dtype)
    if torch_dtype.is_floating_point:
        g = torch.Generator().manual_seed(SEED)
        return torch.randn(BATCH, *shape, generator=g).to(torch_dtype)
    return torch.zeros(BATCH, *shape, dtype=torch_dtype)


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _short(value: float) -> float:
    return float(np.format_float_positional(np.float32(value), unique=True))


def fingerprint(model: nn.Module, example: torch.Tensor) -> dict | None:
    """The output record of `model` (in eval mode) on the probe input made like `example`; None when the
    model does not return a tensor."""
    shape, dtype = list(example.shape[1:]), str(example.dtype).removeprefix("torch.")
    with torch.no_grad():
        out = _first_tensor(model(probe_input(shape, dtype)))
    if out is None or not out.is_floating_point():
        return None
    flat = out.detach().double().reshape(-1)
    return {
        "shape": list(out.shape),
        "head": [_short(v) for v in flat[:HEAD].tolist()],
        "abs_sum": _short(float(flat.abs().sum())),
    }


def check_probe(model: nn.Module, probe: ProbeRecord, recorded_input: InputRecord, source: str) -> None:
    """ArchitectureMismatchError when `model` does not reproduce the stored fingerprint."""
    expected = probe.model_dump()
    with torch.no_grad():
        out = _first_tensor(model(probe_input(recorded_input.shape, recorded_input.dtype)))
    fix = "load it into a fresh instance of the class it was saved from (unchanged forward)"
    if out is None or list(out.shape) != expected["shape"]:
        got = None if out is None else list(out.shape)
        raise ArchitectureMismatchError(
            f"{source}: the rebuilt model outputs shape {got}, not {expected['shape']}; {fix}"
        )
    flat = out.detach().double().reshape(-1)
    scale = 1.0 + float(np.max(np.abs(expected["head"]), initial=0.0))
    head_diff = float(np.max(np.abs(flat[: len(expected["head"])].numpy() - expected["head"]), initial=0.0))
    sum_diff = abs(float(flat.abs().sum()) - expected["abs_sum"])
    if head_diff > RTOL * scale or sum_diff > RTOL * (1.0 + expected["abs_sum"]):
        raise ArchitectureMismatchError(
            f"{source}: the rebuilt model does not compute what the saved model computed (outputs differ by "
            f"{head_diff:.3g} on the file's check input); {fix}"
        )
