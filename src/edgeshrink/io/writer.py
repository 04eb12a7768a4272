"""`save`: write an artifact as the smallest exact file (.eshrink container), or as a checkpoint."""

from __future__ import annotations

from pathlib import Path

from edgeshrink.artifact import Artifact
from edgeshrink.encode.container import PackResult, state_to_bytes
from edgeshrink.files import atomic_write
from edgeshrink.io.probe import fingerprint
from edgeshrink.io.settings import EncodeConfig, index_bits_for
from edgeshrink.io.storage import eval_mode, storage_state


def header_meta(artifact: Artifact, probe: bool = True) -> dict:
    """What a file records besides its tensors: recipe and seed, quantization, precision, the input the
    model takes and the fingerprint that `load` checks."""
    meta = dict(artifact.meta)
    if artifact.quantization is not None:
        meta["quantization"] = artifact.quantization.model_dump(mode="json")
        # the usual case: none of them
        for key in ("per_tensor", "rewritten", "split_hardswish", "sliced", "recurrent"):
            if not meta["quantization"][key]:
                del meta["quantization"][key]
    if artifact.precision != "float32":
        meta["precision"] = artifact.precision
    example = artifact.example()
    if example is not None:
        meta["input"] = {"shape": list(example.shape[1:]), "dtype": str(example.dtype).removeprefix("torch.")}
        if probe:
            with eval_mode(artifact.model):
                record = fingerprint(artifact.model, example)
            if record is not None:
                meta["probe"] = record
    return meta


def to_bytes(artifact: Artifact, settings: EncodeConfig | None = None, probe: bool = True) -> PackResult:
    """The container bytes of an artifact, in memory (`probe=False`: without the fingerprint, for sizes)."""
    settings = settings or EncodeConfig()
    state, represents = storage_state(artifact)
    return state_to_bytes(
        state,
        coding=settings.coding,
        index_bits=index_bits_for(artifact.model, settings),
        arch=artifact.arch.to_dict(),
        meta=header_meta(artifact, probe),
        represents=represents,
    )


def save(artifact: Artifact, path: str | Path, settings: EncodeConfig | None = None) -> PackResult:
    """Write `artifact` to `path` (a file, or a folder that gets model.eshrink) as an .eshrink container."""
    from edgeshrink.io.reader import CONTAINER_NAME

    target = Path(path)
    if target.is_dir():
        target = target / CONTAINER_NAME
    result = to_bytes(artifact, settings)
    atomic_write(target, result.data)
    result.path = target
    return result


def save_checkpoint(path: str | Path, artifact: Artifact, accuracy: float | None = None) -> Path:
    """Write `artifact` as a torch checkpoint (read back with `load`, weights_only)."""
    from edgeshrink.checkpoints import checkpoint_bytes, write_checkpoint

    state, _ = storage_state(artifact)
    data = checkpoint_bytes(state, artifact.arch.to_dict(), header_meta(artifact), accuracy)
    return write_checkpoint(path, data)
