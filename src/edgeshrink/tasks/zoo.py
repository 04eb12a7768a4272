"""Reference architectures, registered by name so that every one is tested and listed automatically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from edgeshrink.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]  # one example, without the batch dimension
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, input_shape: tuple[int, ...], description: str):
    """Decorator: add a model factory to the zoo under `name`."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, factory, input_shape, description)
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name (fresh random weights)."""
    return model_entry(name).factory(**kwargs)


class LeNet300(nn.Module):
    """LeNet-300-100: the 784-300-100-10 perceptron of LeCun et al. 1998 (266,200 weights)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


class LeNet5Caffe(nn.Module):
    """LeNet-5 as in Caffe's example and Deep Compression: conv 20@5x5, pool, conv 50@5x5, pool,
    fc 500, fc 10 (430,500 weights)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(800, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits: conv 16@3x3, conv 32@3x3, pool, fc 128, fc 10 (about 71k weights)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.pool(self.relu(self.conv2(x)))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


register_model("lenet300", (1, 28, 28), "LeNet-300-100 perceptron, 784-300-100-10")(LeNet300)
register_model("lenet5", (1, 28, 28), "LeNet-5, Caffe variant (20/50 conv, 500 fc) used by Deep Compression")(
    LeNet5Caffe
)
register_model("digits-cnn", (1, 8, 8), "small CNN for the 8x8 scikit-learn digits")(DigitsCNN)
