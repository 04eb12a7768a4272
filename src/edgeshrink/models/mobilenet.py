"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al., CVPR 2018), sized for small images.

For 28x28 and 32x32 inputs the stem convolution has stride 1 instead of 2 (and MobileNetV2's second
stage too, as in the common CIFAR adaptations), so the last feature map is 2x2 (V1) or 4x4 (V2)
rather than nothing. `width` is the paper's width multiplier (alpha); channel counts are rounded to
multiples of 8. For architecture search, MobileNetV2 also takes `depth` (a multiplier of each stage's repeats,
at least one block each), `kernel_size` (the depthwise kernels) and `resolution` (the input is resized first).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeshrink.models.layers import ConvBNReLU, Resize, make_divisible
from edgeshrink.models.registry import register_model

# (output channels, stride) of MobileNetV1's 13 depthwise-separable blocks
V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2, CIFAR strides
V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV1(nn.Module):
    """Conv 3x3, then 13 blocks of depthwise 3x3 + pointwise 1x1 (each with BN and ReLU), pool, linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        previous = make_divisible(32 * width)
        layers: list[nn.Module] = [ConvBNReLU(in_channels, previous, 3, 1)]
        for channels, stride in V1_BLOCKS:
            out = make_divisible(channels * width)
            layers += [ConvBNReLU(previous, previous, 3, stride, groups=previous), ConvBNReLU(previous, out, 1)]
            previous = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class InvertedResidual(nn.Module):
    """Expand 1x1 (t times) -> depthwise 3x3 -> linear 1x1 projection; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU(in_channels, hidden, 1, act=nn.ReLU6))
        layers += [
            ConvBNReLU(hidden, hidden, kernel_size, stride, groups=hidden, act=nn.ReLU6),
            ConvBNReLU(hidden, out_channels, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """Conv 3x3, 17 inverted-residual blocks, conv 1x1 to 1280 channels, pool, linear."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        depth: float = 1.0,
        kernel_size: int = 3,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        previous = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        self.resize = Resize(resolution)
        layers: list[nn.Module] = [ConvBNReLU(in_channels, previous, 3, 1, act=nn.ReLU6)]
        for t, c, n, s in V2_BLOCKS:
            out = make_divisible(c * width)
            for i in range(max(1, math.ceil(n * depth))):
                layers.append(InvertedResidual(previous, out, s if i == 0 else 1, t, kernel_size))
                previous = out
        layers.append(ConvBNReLU(previous, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(self.resize(x))))))


register_model("mobilenetv1", (1, 28, 28), "MobileNetV1 (depthwise separable, width multiplier), stem stride 1")(
    MobileNetV1
)


def mobilenetv2_space(trial) -> dict:
    """Width 0.25-1, depth 0.34-1 of each stage's repeats, depthwise kernels 3 or 5, input resized to 16-28."""
    return {
        "width": trial.suggest_float("width", 0.25, 1.0, step=0.125),
        "depth": trial.suggest_categorical("depth", [0.34, 0.67, 1.0]),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 5]),
        "resolution": trial.suggest_categorical("resolution", [16, 20, 24, 28]),
    }


register_model(
    "mobilenetv2",
    (1, 28, 28),
    "MobileNetV2 (inverted residuals, width multiplier), CIFAR strides",
    space=mobilenetv2_space,
)(MobileNetV2)
