"""Turn what a user passes (a module, an Artifact, a compress() result, a path) into an Artifact."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeshrink.artifact import Artifact, Quantization, require_one_output
from edgeshrink.errors import ConfigError, FormatError

EXPORTED_SUFFIXES = (".onnx", ".tflite")


def artifact_of_module(model: nn.Module, example_input: torch.Tensor | None = None) -> Artifact:
    """An in-memory model as an artifact: its quantization and precision read from its modules."""
    from edgeshrink.quant.half import is_half
    from edgeshrink.quant.prepare import per_tensor_layers, quantization_bits
    from edgeshrink.quant.recurrent import recurrent_quantizers

    bits, group, reduced_layers = quantization_bits(model)
    recurrent = {key: q.bits for key, _, _, q in recurrent_quantizers(model)}
    quantization = (
        Quantization(
            bits=bits,
            group_size=group,
            reduced_layers=reduced_layers,
            per_tensor=per_tensor_layers(model),
            recurrent=recurrent,
        )
        if bits or recurrent
        else None
    )
    example = None if example_input is None else example_input[:1]
    return Artifact(
        model, quantization=quantization, precision="float16" if is_half(model) else "float32", example_input=example
    )


def with_zoo_name(art: Artifact, model_name: str | None) -> Artifact:
    """A loaded file that records no architecture, rebuilt from the zoo model the user named: record
    that name, so its input shape is known."""
    if model_name is None or art.arch.model is not None:
        return art
    return art.replace(arch=art.arch.model_copy(update={"model": model_name}))


def is_exported_file(obj: Any) -> bool:
    """An .onnx or .tflite path, or a file carrying the TFLite identifier under another name."""
    if not isinstance(obj, str | Path):
        return False
    path = Path(obj)
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        return True
    from edgeshrink.measure.tflite_graph import is_tflite

    return path.is_file() and is_tflite(path)


@contextmanager
def naming_exported_files() -> Iterator[None]:
    """For commands that also measure exported files: an unreadable file's error names them too."""
    from edgeshrink.io.reader import KINDS

    try:
        yield
    except FormatError as exc:
        if str(exc).endswith(KINDS):
            raise FormatError(f"{exc}, or an exported .onnx / .tflite file") from None
        raise


def to_artifact(
    obj: Any, example_input: torch.Tensor | None = None, model: nn.Module | None = None, model_name: str | None = None
) -> Artifact:
    """An Artifact from a module, an Artifact, a compress() result or a saved file (run folder, container,
    checkpoint; `model` is a fresh instance for files of your own class, `model_name` a zoo model for
    files that do not name theirs)."""
    if isinstance(obj, Artifact):
        art = obj
    elif isinstance(getattr(obj, "artifact", None), Artifact):
        art = obj.artifact
    elif isinstance(obj, nn.Module):
        art = artifact_of_module(obj)
        require_one_output(obj, example_input)
    elif isinstance(obj, str | Path):
        from edgeshrink.io import load

        if model is None and model_name is not None:
            from edgeshrink.models import create_model

            model = create_model(model_name)
        art = with_zoo_name(load(obj, model), model_name)
    else:
        raise ConfigError(f"expected a model, an Artifact, a compress() result or a path, got {type(obj).__name__}")
    if example_input is not None:
        art = art.replace(example_input=example_input[:1])
    return art
