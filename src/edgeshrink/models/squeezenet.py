"""SqueezeNet 1.1 (Iandola et al. 2016; the 1.1 revision of the reference repository): Fire modules
(1x1 squeeze, then 1x1 and 3x3 expand, concatenated), a 1x1 convolution classifier, global pooling.

For small images the first convolution has stride 1 and padding 1 (not stride 2 unpadded), so a
28x28 input still leaves a 3x3 map for the last Fire modules.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.models.registry import register_model

# (squeeze, expand 1x1, expand 3x3) of the eight Fire modules; a max pool before the 1st, 3rd and 5th
FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128), (48, 192, 192), (48, 192, 192)]
FIRES += [(64, 256, 256), (64, 256, 256)]
POOL_BEFORE = {0, 2, 4}


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> [expand 1x1, expand 3x3] -> ReLU -> concatenate."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 for small images (0.73M parameters with 10 classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, stride=1, padding=1), nn.ReLU(inplace=True)]
        previous = 64
        for i, (s, e1, e3) in enumerate(FIRES):
            if i in POOL_BEFORE:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            layers.append(Fire(previous, s, e1, e3))
            previous = e1 + e3
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Conv2d(previous, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.classifier(self.dropout(self.features(x))))
        return self.flatten(self.pool(x))


register_model("squeezenet1_1", (1, 28, 28), "SqueezeNet 1.1 (Fire modules, conv classifier), stem stride 1")(
    SqueezeNet11
)
