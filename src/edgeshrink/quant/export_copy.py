"""Copies of a fake-quantized model for exporters: quantizers replaced by constant-parameter modules.

Exporters never change the artifact's modules: they export one of these copies instead, in which
each active activation quantizer is a fixed quantize/dequantize op (the ONNX custom op, or PyTorch's
decomposed int8 ops that LiteRT's converter folds) or nothing (the float twin), and every weight is a
plain tensor holding its computed (fake-quantized) value.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from edgeshrink.quant.fakequant import ActQuant, quantize_dequantize, quantize_dequantize_int8
from edgeshrink.quant.prepare import activation_quantizers
from edgeshrink.weights import baked_copy

Style = Literal["onnx", "litert", "float"]


class FixedQDQ(nn.Module):
    """Quantize then dequantize with constant (scale, zero point) on the 0..255 grid: the ONNX custom
    op (`signed=False`) or int8 decomposed ops with the zero point shifted by 128 (`signed=True`)."""

    def __init__(self, scale: float, zero_point: int, signed: bool) -> None:
        super().__init__()
        self.scale, self.zero_point, self.signed = scale, zero_point, signed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = quantize_dequantize_int8 if self.signed else quantize_dequantize
        return op(x, self.scale, self.zero_point)


def _replacement(quantizer: ActQuant, style: Style) -> nn.Module:
    if style == "float" or quantizer.mode != "quantize":
        return nn.Identity()
    return FixedQDQ(float(quantizer.scale), int(quantizer.zero_point), signed=style == "litert")


def export_copy(model: nn.Module, style: Style) -> nn.Module:
    """A plain copy of `model` (eval mode) for an exporter: see the module docstring."""
    plain = baked_copy(model).eval()
    for name, quantizer in activation_quantizers(plain):
        plain.set_submodule(name, _replacement(quantizer, style))
    return plain
