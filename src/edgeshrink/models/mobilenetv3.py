"""A compact MobileNetV3-style network (Howard et al. 2019): inverted residuals with depthwise convs,
squeeze-excite gates (an elementwise multiply by a hard-sigmoid) and hardswish activations.

The blocks users bring from MobileNetV3, at a size that trains on digits or MNIST in seconds: the
architecture the issue on budgets found collapsing under a fixed 94% pruning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeshrink.models.layers import ConvBNReLU, make_divisible
from edgeshrink.models.registry import register_model


class SqueezeExciteBlock(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> squeeze-excite gate -> project (1x1), residual when shapes match."""

    def __init__(self, cin: int, cexp: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = ConvBNReLU(cin, cexp, 1, act=nn.Hardswish)
        self.dw = ConvBNReLU(cexp, cexp, 3, stride, groups=cexp, act=nn.Hardswish)
        squeeze = make_divisible(cexp / 4, 8)
        self.se_reduce = nn.Conv2d(cexp, squeeze, 1)
        self.se_expand = nn.Conv2d(squeeze, cexp, 1)
        self.project = ConvBNReLU(cexp, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.expand(x))
        gate = F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(h.mean((2, 3), keepdim=True)))))
        h = self.project(h * gate)
        return x + h if self.residual else h


class MobileNetV3Tiny(nn.Module):
    """Stem (stride 2) -> 4 squeeze-excite blocks -> 1x1 conv -> global pool -> classifier; 39,034
    parameters at width 1 for 1x28x28 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return make_divisible(c * width, 8)

        self.stem = ConvBNReLU(in_channels, ch(16), 3, 2, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            SqueezeExciteBlock(ch(16), ch(48), ch(16), 1),
            SqueezeExciteBlock(ch(16), ch(64), ch(24), 2),
            SqueezeExciteBlock(ch(24), ch(96), ch(24), 1),
            SqueezeExciteBlock(ch(24), ch(96), ch(40), 2),
        )
        self.last = ConvBNReLU(ch(40), ch(128), 1, act=nn.Hardswish)
        self.classifier = nn.Linear(ch(128), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.last(self.blocks(self.stem(x)))
        return self.classifier(h.mean((2, 3)))


register_model(
    "mobilenetv3-tiny",
    (1, 28, 28),
    "MobileNetV3-style: depthwise inverted residuals, squeeze-excite, hardswish (39k parameters)",
)(MobileNetV3Tiny)
