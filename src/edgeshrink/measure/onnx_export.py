"""The one place that turns a torch model into an ONNX file for measurement (switch to
`edgeshrink.export` here when it lands)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from edgeshrink.errors import ExportError


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """fp32 ONNX of `model` at the example's shape, one self-contained file (no external data)."""
    from edgeshrink.measure.graph import plain_copy

    path = Path(path)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # torchvision notes
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(plain_copy(model), (example,), str(path), dynamo=True, external_data=False, verbose=False)
    except Exception as exc:  # the exporter raises many types; each means the model cannot be exported
        raise ExportError(f"ONNX export failed ({str(exc).splitlines()[0][:160]}); profile without --onnx") from None
    return path
