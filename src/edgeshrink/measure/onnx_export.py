"""The one place that turns a torch model into an ONNX file for measurement: the exporter of
`edgeshrink.exporters.onnx` (fp32, fp16 or QDQ as the model is), written without verification."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """ONNX of `model` (dynamic batch), one self-contained file (no external data)."""
    from edgeshrink.exporters.onnx import export

    export(model, path, example, verify=False, activation_type="uint8")
    return Path(path)
