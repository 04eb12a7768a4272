"""The checkpoint file format: a state dict plus the header entries a container has, via torch.save.

Checkpoints are read with `torch.load(weights_only=True)`: no pickled code runs. What a checkpoint
means as a model is `edgeshrink.io`'s business; this module knows bytes and state dicts only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeshrink.errors import FormatError
from edgeshrink.files import atomic_write

FORMAT = "edgeshrink-checkpoint"


@dataclass
class Checkpoint:
    state: dict[str, torch.Tensor]
    arch: dict | None
    meta: dict
    accuracy: float | None
    nbytes: int


def checkpoint_bytes(
    state: dict[str, torch.Tensor], arch: dict | None, meta: dict | None = None, accuracy: float | None = None
) -> bytes:
    buffer = io.BytesIO()
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    payload = {"format": FORMAT, "version": 2, "arch": arch, "meta": meta or {}, "accuracy": accuracy}
    torch.save({**payload, "state_dict": tensors}, buffer)
    return buffer.getvalue()


def write_checkpoint(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, data)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """An edgeshrink checkpoint or a plain state-dict file (`torch.save(model.state_dict(), path)`)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign bytes; all mean the same here
        raise FormatError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:120]})") from None
    size = path.stat().st_size
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        meta = obj.get("meta") or {}
        return Checkpoint(obj["state_dict"], obj.get("arch"), meta, obj.get("accuracy"), size)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Checkpoint(obj, None, {}, None, size)
    raise FormatError(f"{path} holds no state dict: save one with torch.save(model.state_dict(), path)")
