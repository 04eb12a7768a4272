"""`edgeshrink.export`: a file a device runs, verified in that runtime before it is written."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from edgeshrink.api.inputs import to_artifact
from edgeshrink.artifact import require_one_output
from edgeshrink.errors import ExportError
from edgeshrink.exporters.base import ExportResult, export_model, format_for


def export(
    model: Any,
    path: str | Path,
    example_input: torch.Tensor | None = None,
    *,
    format: str | None = None,
    verify_data: Iterable[torch.Tensor] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    verify: bool = True,
    threads: int = 2,
    **options: Any,
) -> ExportResult:
    """Export a model, an Artifact or a compress() result to `path` in `format` (default: from the file
    suffix; see `edgeshrink.exporters.list_exporters()`), verified on `verify_data` (batches of inputs;
    default: the example input) in the format's runtime. Options are the format's own
    (`activation_type=` for onnx, `quantize=` for tflite and c, `name=` for c). Raises ExportError and
    writes nothing when the file does not compute what the model computes."""
    art = to_artifact(model)
    batches = [x for x in verify_data] if verify_data is not None else []
    example = example_input if example_input is not None else (batches[0][:1] if batches else art.example())
    if example is None:
        raise ExportError("export needs example_input= (one input batch) or verify_data=")
    require_one_output(art.model, example)
    return export_model(
        art.model,
        path,
        example[:1],
        format=format or format_for(path),
        verify_batches=batches,
        calibration=None if calibration is None else list(calibration),
        verify=verify,
        threads=threads,
        options=options,
    )


def export_tflite(
    model: Any, path: str | Path, example_input: torch.Tensor | None = None, **kwargs: Any
) -> ExportResult:
    """`export(..., format="tflite")`."""
    return export(model, path, example_input, format="tflite", **kwargs)
