"""The LeNets of Deep Compression, and a small CNN for the 8x8 digits; fully connected layers sized
from the input's height and width."""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.models.registry import register_model


def _hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))


class LeNet300(nn.Module):
    """LeNet-300-100: the 784-300-100-10 perceptron of LeCun et al. 1998 (266,200 weights at 28x28)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int | tuple[int, int] = 28) -> None:
        super().__init__()
        h, w = _hw(image_size)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * h * w, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


class LeNet5Caffe(nn.Module):
    """LeNet-5 as in Caffe's example and Deep Compression: conv 20@5x5, pool, conv 50@5x5, pool,
    fc 500, fc 10 (430,500 weights at 28x28)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int | tuple[int, int] = 28) -> None:
        super().__init__()
        h, w = _hw(image_size)
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2  # two 5x5 valid convs, two 2x2 pools
        self.fc1 = nn.Linear(50 * fh * fw, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits: conv 16@3x3, conv 32@3x3, pool, fc 128, fc 10 (about 71k weights at 8x8)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int | tuple[int, int] = 8) -> None:
        super().__init__()
        h, w = _hw(image_size)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * (h // 2) * (w // 2), 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


register_model("lenet300", (1, 28, 28), "LeNet-300-100 perceptron, 784-300-100-10")(LeNet300)
register_model("lenet5", (1, 28, 28), "LeNet-5, Caffe variant (20/50 conv, 500 fc) used by Deep Compression")(
    LeNet5Caffe
)
register_model("digits-cnn", (1, 8, 8), "small CNN for the 8x8 scikit-learn digits")(DigitsCNN)
