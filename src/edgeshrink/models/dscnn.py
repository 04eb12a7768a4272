"""DS-CNN, the depthwise-separable keyword-spotting network of Zhang et al. 2017 ("Hello Edge: Keyword
Spotting on Microcontrollers"): a 10x4 convolution with stride 2 over 49x10 MFCC features, four
depthwise 3x3 + pointwise 1x1 blocks, global average pooling, one linear layer.

`width` scales the 64 channels of DS-CNN-S (the paper's M and L variants are width 172/64 and 276/64
with five blocks: `blocks=5`). The same network runs on images (1x28x28, 3x32x32). For architecture search,
`kernel_size` sets the depthwise kernels and `resolution` resizes the input first.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.models.layers import ConvBNReLU, Resize
from edgeshrink.models.registry import register_model


class DSCNN(nn.Module):
    """DS-CNN-S at width 1: 64 channels, 4 depthwise-separable blocks."""

    def __init__(
        self,
        num_classes: int = 12,
        in_channels: int = 1,
        width: float = 1.0,
        blocks: int = 4,
        kernel_size: int = 3,
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        channels = max(1, round(64 * width))
        self.resize = Resize(resolution)
        layers: list[nn.Module] = [ConvBNReLU(in_channels, channels, (10, 4), (2, 2), padding=(4, 1))]
        for _ in range(blocks):
            layers += [ConvBNReLU(channels, channels, kernel_size, groups=channels), ConvBNReLU(channels, channels, 1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(self.resize(x)))))


def dscnn_space(trial) -> dict:
    """Width 0.25-1.5 (16-96 channels), 1-5 blocks, depthwise kernels 3 or 5, input resized to 16-28 pixels."""
    return {
        "width": trial.suggest_float("width", 0.25, 1.5, step=0.125),
        "blocks": trial.suggest_int("blocks", 1, 5),
        "kernel_size": trial.suggest_categorical("kernel_size", [3, 5]),
        "resolution": trial.suggest_categorical("resolution", [16, 20, 24, 28]),
    }


register_model(
    "ds-cnn",
    (1, 49, 10),
    "DS-CNN-S keyword spotting (Hello Edge), 49x10 MFCC input, 12 classes by default",
    input_shapes=((1, 49, 10), (1, 28, 28), (3, 32, 32)),
    space=dscnn_space,
)(DSCNN)
