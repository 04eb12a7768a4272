"""The model registry: factories by name, sized for an input shape, each configured variant its own entry.

`create_model("resnet8", input_shape=(3, 32, 32), width=4)` builds a model; the registry passes the
input's channels (and, to factories whose layer sizes depend on it, its height and width) so that
every family is sized for 1x28x28 as well as 3x32x32 inputs. An entry may carry default keyword
arguments ("resnet8" is the ResNet family at depth 8), so a name plus a few kwargs describes an
architecture completely: what a checkpoint or container records to rebuild it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from edgeshrink.errors import ConfigError

Shape = tuple[int, ...]
IMAGE_SHAPES: tuple[Shape, ...] = ((1, 28, 28), (3, 32, 32))  # MNIST-like and CIFAR-like inputs


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its factory, default kwargs, default and supported input shapes."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: Shape  # the default example, without the batch dimension
    description: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_shapes: tuple[Shape, ...] = ()  # every shape the entry is sized for (tested); default first
    width: bool = False  # whether the family takes a `width` multiplier
    # architecture search: space(trial) -> keyword arguments (trial: anything with Optuna's suggest_* methods)
    space: Callable[[Any], dict[str, Any]] | None = None

    def shapes(self) -> tuple[Shape, ...]:
        return self.input_shapes or (self.input_shape,)


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    input_shape: Shape,
    description: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    input_shapes: tuple[Shape, ...] | None = None,
    space: Callable[[Any], dict[str, Any]] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator (or plain call on an existing factory): add `factory` to the zoo under `name`.

    `kwargs` are defaults for this entry (a configured variant); `input_shapes` the shapes it supports
    (default: `input_shape` plus 1x28x28 and 3x32x32); `space(trial)` the keyword arguments an architecture
    search draws (the family's knobs: width, depth, kernel size, resolution).
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        shapes = input_shapes or tuple(dict.fromkeys([tuple(input_shape), *IMAGE_SHAPES]))
        params = inspect.signature(factory).parameters
        _MODELS[name] = ModelEntry(
            name, factory, tuple(input_shape), description, dict(kwargs or {}), tuple(shapes), "width" in params, space
        )
        return factory

    return wrap


def _load_builtin_models() -> None:
    # Importing the family modules registers their models; done lazily to keep imports light.
    from edgeshrink.models import dscnn, lenet, mobilenet, mobilenetv3, resnet, sequence, squeezenet  # noqa: F401


def list_models() -> list[str]:
    _load_builtin_models()
    return sorted(_MODELS)


def searchable_models() -> list[str]:
    """Zoo families with an architecture search space."""
    return [name for name in list_models() if _MODELS[name].space is not None]


def model_entry(name: str) -> ModelEntry:
    _load_builtin_models()
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def sizing_kwargs(factory: Callable[..., nn.Module], input_shape: Shape) -> dict[str, Any]:
    """The keyword arguments that size `factory` for one input shape (channels, and height x width
    for factories that take `image_size`)."""
    params = inspect.signature(factory).parameters
    out: dict[str, Any] = {}
    if "in_channels" in params:
        out["in_channels"] = int(input_shape[0])
    if "image_size" in params and len(input_shape) == 3:
        out["image_size"] = (int(input_shape[1]), int(input_shape[2]))
    return out


def create_model(name: str, input_shape: Shape | None = None, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name (fresh random weights), sized for `input_shape` (default: the entry's).

    Keyword arguments (`width=`, `num_classes=`, ...) override the entry's defaults.
    """
    entry = model_entry(name)
    params = inspect.signature(entry.factory).parameters
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        allowed = ", ".join(p for p in params if p not in ("in_channels", "image_size"))
        raise ConfigError(f"model {name!r} takes no option {unknown[0]!r} (options: {allowed})")
    shape = tuple(input_shape) if input_shape is not None else entry.input_shape
    return entry.factory(**{**sizing_kwargs(entry.factory, shape), **entry.kwargs, **kwargs})
