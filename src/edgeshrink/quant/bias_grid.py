"""Biases on the integer grid that the runtimes add them on.

An integer kernel adds a layer's bias as int32 at scale input scale x weight scale, per output channel:
ONNX Runtime's QLinearConv and QGemm (exporters/qdq.py writes the biases so) and LiteRT's int8 CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED. A float bias in the fake-quantized model differs from that by up to
half a step of that grid; an output near a rounding boundary then lands one activation step away from the
file's, and the steps add up layer after layer (the MobileNetV3-style net's int8 files ended 4 output steps
off PyTorch in both runtimes, 3 with its biases on the grid: benchmarks/architectures.py). Snapping a bias to
its grid changes no int32 bias in an exported file: the exporters round it there anyway.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from edgeshrink.quant.op_grids import input_quantizer
from edgeshrink.quant.prepare import weight_quantizers


@torch.no_grad()
def snap_biases(model: nn.Module) -> list[str]:
    """Round every quantized layer's bias to its int32 grid (the grid in float32, as the files store it);
    returns the layers changed. Blocked (grouped) weights have no per-channel grid and are left alone."""
    if not isinstance(model, fx.GraphModule):
        return []
    snapped = []
    for name, module, quantizer in weight_quantizers(model):
        bias, source = getattr(module, "bias", None), input_quantizer(model, name)
        if source is None or bias is None or quantizer.group_size:
            continue
        grid = (float(source.scale) * quantizer.scale.double().reshape(-1)).float().double()
        bias.copy_((torch.round(bias.double() / grid) * grid).to(bias.dtype))
        snapped.append(name)
    return snapped
