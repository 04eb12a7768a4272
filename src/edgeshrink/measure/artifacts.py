"""Open what a user profiles: a checkpoint, a run folder, an .eshrink container or an .onnx file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeshrink.errors import ConfigError, FormatError

KINDS = "a checkpoint (.pt), a run folder, an .eshrink container, an .onnx or a .tflite file"


@dataclass
class Artifact:
    """A model to profile: the torch model (None for ONNX), an example input at batch 1, the file's bytes."""

    path: Path
    kind: str  # checkpoint | container | run-folder | onnx | module
    arch: dict | None
    model: nn.Module | None
    example: torch.Tensor
    file_bytes: int | None
    skips_zeros: bool  # stored as nonzeros only (a container): a runtime reading it skips zero weights
    onnx_path: Path | None = None
    tflite_path: Path | None = None
    report: dict | None = None


def _zoo_model(arch: dict | None, model_name: str | None, source: str) -> tuple[nn.Module, torch.Tensor]:
    from edgeshrink.tasks.zoo import create_model, list_models, model_entry

    name = model_name or (arch or {}).get("model")
    if not name:
        raise ConfigError(
            f"{source} does not record its architecture: pass --model (one of {', '.join(list_models())})"
        )
    entry = model_entry(name)
    return create_model(name), torch.zeros(1, *entry.input_shape)


def _is_container(path: Path) -> bool:
    from edgeshrink.encode.container import MAGIC

    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def open_artifact(path: str | Path, model_name: str | None = None) -> Artifact:
    """Recognise the file by its content (container magic, ONNX, torch checkpoint); anything else is a
    one-line FormatError."""
    import json

    from edgeshrink.encode.container import load_into, read_container

    path = Path(path)
    if path.is_dir():
        container = path / "model.eshrink"
        if not container.is_file():
            raise FormatError(f"{path} is a folder without model.eshrink: pass {KINDS}")
        art = open_artifact(container, model_name)
        report = path / "report.json"
        art.path, art.kind, art.report = (
            path,
            "run-folder",
            json.loads(report.read_text()) if report.is_file() else None,
        )
        return art
    if not path.is_file():
        raise FormatError(f"{path} does not exist: pass {KINDS}")
    size = path.stat().st_size
    if _is_container(path):
        c = read_container(path)
        model, example = _zoo_model(c.arch, model_name, str(path))
        return Artifact(path, "container", c.arch, load_into(model, c.state, str(path)), example, size, True)
    if path.suffix.lower() == ".onnx":
        from edgeshrink.measure.onnx_graph import input_shape, load_onnx

        shape = input_shape(load_onnx(path))
        return Artifact(path, "onnx", None, None, torch.zeros(shape), size, False, onnx_path=path)
    from edgeshrink.measure.tflite_graph import is_tflite

    if is_tflite(path):
        from edgeshrink.measure.tflite_graph import tflite_input_shape

        shape = tflite_input_shape(path)
        return Artifact(path, "tflite", None, None, torch.zeros(shape), size, False, tflite_path=path)
    from edgeshrink.checkpoints import load_checkpoint

    try:
        ckpt = load_checkpoint(path)
    except FormatError:
        raise FormatError(f"{path} is not {KINDS}") from None
    model, example = _zoo_model(ckpt["arch"], model_name, str(path))
    return Artifact(
        path, "checkpoint", ckpt["arch"], load_into(model, ckpt["state_dict"], str(path)), example, size, False
    )


def from_module(model: nn.Module, input_shape: tuple[int, ...]) -> Artifact:
    """Profile an in-memory model: `input_shape` is one example without the batch dimension."""
    return Artifact(Path("<module>"), "module", None, model, torch.zeros(1, *input_shape), None, False)
