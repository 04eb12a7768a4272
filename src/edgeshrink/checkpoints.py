"""Baseline checkpoints: a plain state dict plus what architecture it belongs to, loaded safely."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from edgeshrink.encode.container import atomic_write
from edgeshrink.errors import FormatError

FORMAT = "edgeshrink-checkpoint"


def save_checkpoint(
    path: str | Path, model: nn.Module, arch: dict | None = None, accuracy: float | None = None
) -> Path:
    from edgeshrink.weights import effective_state_dict

    buffer = io.BytesIO()
    state = {k: v.contiguous() for k, v in effective_state_dict(model).items()}
    torch.save({"format": FORMAT, "version": 1, "arch": arch, "accuracy": accuracy, "state_dict": state}, buffer)
    path = Path(path)
    atomic_write(path, buffer.getvalue())
    return path


def load_checkpoint(path: str | Path) -> dict:
    """{'state_dict', 'arch', 'accuracy'} from an edgeshrink checkpoint or a plain state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign bytes; all mean the same here
        raise FormatError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return {"state_dict": obj["state_dict"], "arch": obj.get("arch"), "accuracy": obj.get("accuracy")}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj, "arch": None, "accuracy": None}
    raise FormatError(f"{path} holds no state dict: save one with torch.save(model.state_dict(), path)")
