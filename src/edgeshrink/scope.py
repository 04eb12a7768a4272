"""Which layers a stage touches: names, glob patterns, positions, module types or kinds, with exclusions.

A name or pattern that matches nothing is an error, not a silent no-op (a typo in a recipe must not
go unnoticed). Generic selectors let one recipe fit every model and may match nothing (a "conv"
setting on an MLP): positions ("first", "last": the model's first and last weight layers, in the
order the model registers them; the most sensitive ones to compress), module types ("Conv2d") and
kinds ("conv", "linear"). Per-layer settings use the same selectors, most specific first:
exact name > glob pattern > position > module type > kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TypeVar

from torch import nn

from edgeshrink.config import Config
from edgeshrink.errors import ScopeError
from edgeshrink.weights import prunable_weights

T = TypeVar("T")


class Scope(Config):
    """Layers to include (default: every Linear and Conv layer) minus layers to exclude."""

    include: list[str] = ["*"]
    exclude: list[str] = []


def layer_kind(module: nn.Module) -> str:
    return "linear" if isinstance(module, nn.Linear) else "conv"


KINDS = ("conv", "linear")
POSITIONS = ("first", "last")
_MODULE_TYPES = {"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"}


def is_generic(selector: str) -> bool:
    """Positions, kinds and module types may match nothing; names and patterns may not."""
    return selector in KINDS or selector in POSITIONS or selector in _MODULE_TYPES


def positions(model: nn.Module) -> dict[str, set[str]]:
    """Layer name -> {"first"} / {"last"} / both / nothing, over all of the model's weight layers."""
    names = [n for n, _ in prunable_weights(model)]
    out: dict[str, set[str]] = {n: set() for n in names}
    if names:
        out[names[0]].add("first")
        out[names[-1]].add("last")
    return out


def _rank(selector: str, name: str, module: nn.Module, where: set[str]) -> int | None:
    """How specifically `selector` names this layer (lower is more specific), None if it does not."""
    if selector == name:
        return 0
    if any(ch in selector for ch in "*?[") and fnmatchcase(name, selector):
        return 1
    if selector in where:
        return 2
    if selector == type(module).__name__:
        return 3
    if selector == layer_kind(module):
        return 4
    return None


def select_layers(model: nn.Module, scope: Scope | None = None, what: str = "stage") -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs of the weight layers a scope selects; every selector must match something."""
    scope = scope or Scope()
    layers = list(prunable_weights(model))
    if not layers:
        raise ScopeError(f"{what}: the model has no Linear or Conv layers to work on")
    where = positions(model)
    for selector in [*scope.include, *scope.exclude]:
        if not is_generic(selector) and not any(_rank(selector, n, m, where[n]) is not None for n, m in layers):
            known = ", ".join(n for n, _ in layers[:8]) + (" ..." if len(layers) > 8 else "")
            raise ScopeError(f"{what}: layer selector {selector!r} matches no layer (layers: {known})")
    chosen = [
        (n, m)
        for n, m in layers
        if any(_rank(s, n, m, where[n]) is not None for s in scope.include)
        and not any(_rank(s, n, m, where[n]) is not None for s in scope.exclude)
    ]
    if not chosen:
        raise ScopeError(f"{what}: the scope excludes every layer it includes")
    return chosen


def per_layer(
    model: nn.Module, layers: list[tuple[str, nn.Module]], settings: Mapping[str, T], default: T, what: str
) -> dict[str, T]:
    """Resolve per-layer settings keyed by selectors; a name or pattern matching none of `layers` is an error."""
    where = positions(model)
    out: dict[str, T] = {}
    for key in settings:
        if not is_generic(key) and not any(_rank(key, n, m, where[n]) is not None for n, m in layers):
            raise ScopeError(
                f"{what}: per-layer setting {key!r} matches no selected layer "
                f"(selected: {', '.join(n for n, _ in layers)})"
            )
    for name, module in layers:
        ranked = [(r, key) for key in settings if (r := _rank(key, name, module, where[name])) is not None]
        out[name] = settings[min(ranked)[1]] if ranked else default
    return out
