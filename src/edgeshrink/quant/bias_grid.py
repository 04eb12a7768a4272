"""Biases on the integer grid that the runtimes add them on.

An integer kernel adds a layer's bias as int32 at scale input scale x weight scale, per output channel:
ONNX Runtime's QLinearConv and QGemm (exporters/qdq.py writes the biases so) and LiteRT's int8 CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED. A float bias in the fake-quantized model differs from that by up to
half a step of that grid; an output near a rounding boundary then lands one activation step away from the
file's, and the steps add up layer after layer (a MobileNetV3-style net ended 4 output steps off PyTorch in
both runtimes; with its biases on the grid, 0 in LiteRT and 2 in ONNX Runtime). Snapping a bias to its grid
changes no exported file: the exporters round it there anyway.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from edgeshrink.quant.fakequant import ActQuant
from edgeshrink.quant.prepare import weight_quantizers


def input_scales(model: nn.Module) -> dict[str, float]:
    """Each layer called on the output of an activation quantizer -> that quantizer's scale."""
    if not isinstance(model, fx.GraphModule):
        return {}
    scales = {}
    for node in model.graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if isinstance(source, fx.Node) and source.op == "call_module":
            quantizer = model.get_submodule(str(source.target))
            if isinstance(quantizer, ActQuant):
                scales[str(node.target)] = float(quantizer.scale)
    return scales


@torch.no_grad()
def snap_biases(model: nn.Module) -> list[str]:
    """Round every quantized layer's bias to its int32 grid (the grid in float32, as the files store it);
    returns the layers changed. Blocked (grouped) weights have no per-channel grid and are left alone."""
    scales, snapped = input_scales(model), []
    for name, module, quantizer in weight_quantizers(model):
        bias = getattr(module, "bias", None)
        if name not in scales or bias is None or quantizer.group_size:
            continue
        grid = (scales[name] * quantizer.scale.double().reshape(-1)).float().double()
        bias.copy_((torch.round(bias.double() / grid) * grid).to(bias.dtype))
        snapped.append(name)
    return snapped
