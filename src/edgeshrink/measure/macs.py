"""Multiply-accumulates of one forward pass, counted by PyTorch's own operator-level FLOP counter.

`torch.utils.flop_counter.FlopCounterMode` counts 2 FLOPs per multiply-accumulate of convolutions
(grouped and depthwise included), matrix products and linear layers; MACs = FLOPs / 2. Elementwise
work (BatchNorm at inference, activations, pooling, additions) is not counted, as in the papers that
report MACs.
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1) -> int:
    """MACs of one forward pass of `model` on a `batch_size` x `input_shape` input (eval mode)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(batch_size, *input_shape, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2
