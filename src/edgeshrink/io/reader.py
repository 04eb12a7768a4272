"""`load`: the one way a model comes back from a file, used by every command and function.

It recognises a run folder (its model.eshrink and report.json), an .eshrink container or a checkpoint
by content, rebuilds the architecture (zoo model, or the fresh instance the caller passes) with its
channel edits replayed, puts quantizers and precision back, loads the stored tensors, and checks the
result against the file's fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from edgeshrink.architecture import Arch, build_architecture, replay_channel_edits
from edgeshrink.artifact import Artifact, Kind, Quantization
from edgeshrink.encode.container import MAX_DECODED_BYTES, is_container, read_container
from edgeshrink.errors import FormatError
from edgeshrink.io.probe import check_probe, parse_records, probe_input
from edgeshrink.io.storage import SCALE_SUFFIX, load_quantized, load_state

CONTAINER_NAME = "model.eshrink"
REPORT_NAME = "report.json"
KINDS = "a run folder, an .eshrink container or a checkpoint (.pt)"


@dataclass
class Stored:
    """What a file holds, before it is a model."""

    state: dict[str, torch.Tensor]
    arch: Arch
    meta: dict
    kind: Kind
    path: Path
    nbytes: int


def read_stored(source: str | Path, max_bytes: int = MAX_DECODED_BYTES) -> Stored:
    """The tensors and header of a container or checkpoint (a run folder: its container)."""
    path = Path(source)
    if path.is_dir():
        if not (path / CONTAINER_NAME).is_file():
            raise FormatError(f"{path} is a folder without {CONTAINER_NAME}: pass a run folder written by compress")
        return read_stored(path / CONTAINER_NAME, max_bytes)
    if not path.is_file():
        raise FormatError(f"{path} does not exist: pass {KINDS}")
    if is_container(path):
        c = read_container(path, max_bytes=max_bytes)
        return Stored(c.state, Arch.parse(c.arch, str(path)), c.meta, "container", path, c.nbytes)
    if path.suffix.lower() in (".onnx", ".tflite"):
        raise FormatError(f"{path} is an exported file, not a model to load: profile it, or load its run folder")
    from edgeshrink.checkpoints import read_checkpoint

    try:
        ckpt = read_checkpoint(path)
    except FormatError:
        raise FormatError(f"{path} is not {KINDS}") from None
    return Stored(ckpt.state, Arch.parse(ckpt.arch, str(path)), ckpt.meta, "checkpoint", path, ckpt.nbytes)


def _quantization(meta: dict, source: str) -> Quantization | None:
    if not meta.get("quantization"):
        return None
    try:
        return Quantization.model_validate(meta["quantization"])
    except ValidationError as exc:
        raise FormatError(f"{source}: the quantization record is not valid ({exc.errors()[0]['msg']})") from None


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}


def rebuild(stored: Stored, model: nn.Module | None, skip_edits: int = 0) -> nn.Module:
    """The model a stored file describes, tensors loaded (see the module docstring)."""
    from edgeshrink.quant.half import HalfPrecision

    source = str(stored.path)
    quantization = _quantization(stored.meta, source)
    precision = stored.meta.get("precision", "float32")
    if precision not in ("float32", "float16"):
        raise FormatError(f"{source}: unknown precision {precision!r}; damaged file or a newer edgeshrink")
    if skip_edits and model is not None and stored.arch.channels is not None:
        fresh = replay_channel_edits(model, stored.arch.channels, skip=skip_edits)
    else:
        plain_shapes = None if quantization or precision == "float16" else _shapes(stored.state)
        fresh = build_architecture(stored.arch, model, plain_shapes)
    if quantization is not None:
        from edgeshrink.quant.prepare import prepare
        from edgeshrink.weights import bake_in_place

        skeleton, _ = prepare(
            fresh,
            quantization.bits,
            group_size=quantization.group_size,
            reduced_range=quantization.reduced_range,
            reduced_layers=quantization.reduced_layers,
            rewrite=quantization.rewritten,
            split_hardswish=quantization.split_hardswish,
            slices_keep_grid=quantization.sliced,
        )
        return load_quantized(bake_in_place(skeleton), stored.state, quantization, source)
    if precision == "float16":
        return load_state(HalfPrecision(fresh), stored.state, source).eval()
    return load_state(fresh, stored.state, source).eval()


def to_artifact(stored: Stored, model: nn.Module | None = None, skip_edits: int = 0) -> Artifact:
    """Rebuild and check a stored model (see `load`)."""
    recorded, probe = parse_records(stored.meta, str(stored.path))
    rebuilt = rebuild(stored, model, skip_edits)
    if probe is not None and recorded is not None:
        check_probe(rebuilt, probe, recorded, str(stored.path))
    meta = {k: v for k, v in stored.meta.items() if k in ("recipe", "seed")}
    return Artifact(
        model=rebuilt,
        arch=stored.arch,
        quantization=_quantization(stored.meta, str(stored.path)),
        precision=stored.meta.get("precision", "float32"),
        example_input=None if recorded is None else probe_input(recorded.shape, recorded.dtype)[:1].zero_(),
        meta=meta,
        kind=stored.kind,
        path=stored.path,
        file_bytes=stored.nbytes,
    )


def load(source: str | Path, model: nn.Module | None = None, *, max_bytes: int = MAX_DECODED_BYTES) -> Artifact:
    """The compressed model a run folder, container or checkpoint holds, exactly as it was evaluated.

    `model`: a fresh instance of the original architecture, needed when the file names no zoo model
    (your own class); channel edits, quantizers and precision are applied to it. Refuses (with an
    EdgeshrinkError naming the fix) a file that does not fit the architecture or whose rebuilt model
    does not compute what the saved one did. `max_bytes` bounds the decoded tensors of a container.
    """
    path = Path(source)
    artifact = to_artifact(read_stored(path, max_bytes), model)
    if path.is_dir():
        report = path / REPORT_NAME
        artifact = artifact.replace(kind="run-folder", path=path)
        if report.is_file():
            try:
                artifact = artifact.replace(report=json.loads(report.read_text()))
            except json.JSONDecodeError as exc:
                raise FormatError(f"{report} is not valid JSON ({exc}); run `edgeshrink compress` again") from None
    return artifact


def unpack(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The model stored in a container (or checkpoint, or run folder): `load(path, model).model`."""
    return load(path, model).model
