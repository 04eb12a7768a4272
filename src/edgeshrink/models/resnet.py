"""CIFAR-style ResNets (He et al., CVPR 2016, section 4.2): depth 6n+2, three stages of n basic blocks
with 16/32/64 channels (times `width`), strides 1/2/2, global average pooling, one linear layer.

Shortcuts are identities where the shape is kept and 1x1 convolution + BatchNorm projections where
it changes (the paper's option B). ResNet-8 (n=1, 78k parameters at width 1) and ResNet-20 (n=3,
0.27M) are registered; ResNet-8 at width 4 (1.2M) is the teacher of the distillation benchmark. For
architecture search, `kernel_size` sets the 3x3 convolutions' kernels and `resolution` resizes the input first.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.models.layers import ConvBNReLU, Resize
from edgeshrink.models.registry import register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvBNReLU(out_channels, out_channels, kernel_size, 1, act=None)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNReLU(in_channels, out_channels, 1, stride, padding=0, act=None)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for small images; `width` multiplies every stage's channels (16/32/64)."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        kernel_size: int = 3,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        if width <= 0:
            raise ConfigError(f"ResNet width must be > 0, got {width}")
        blocks = (depth - 2) // 6
        channels = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.resize = Resize(resolution)
        self.stem = ConvBNReLU(in_channels, channels[0], kernel_size, 1)
        stages = []
        previous = channels[0]
        for i, c in enumerate(channels):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(previous, c, 2 if (i > 0 and b == 0) else 1, kernel_size))
                previous = c
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(self.resize(x)))))
        return self.fc(self.flatten(self.pool(x)))


def resnet_space(trial) -> dict:
    """Width 0.25-2, depth 8, 14 or 20, kernels 3 or 5, input resized to 16-28 pixels."""
    return {
        "width": trial.suggest_float("width", 0.25, 2.0, step=0.25),
        "depth": trial.suggest_categorical("depth", [8, 14, 20]),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 5]),
        "resolution": trial.suggest_categorical("resolution", [16, 20, 24, 28]),
    }


register_model(
    "resnet8",
    (1, 28, 28),
    "ResNet-8 (CIFAR style, 16/32/64 x width, 1x1 projections)",
    kwargs={"depth": 8},
    space=resnet_space,
)(ResNetCifar)
register_model(
    "resnet20", (1, 28, 28), "ResNet-20 (CIFAR style, 3 blocks per stage, 1x1 projections)", kwargs={"depth": 20}
)(ResNetCifar)
