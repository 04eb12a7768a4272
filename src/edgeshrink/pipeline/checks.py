"""What `compress` checks before the first stage runs, so a typo in the last stage does not surface
after all the earlier training: every scope and per-layer key against the model, and the stage order."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.recipes import Recipe
from edgeshrink.weights import has_parametrizations

# Stages that need a plain float model, and the stages after which that no longer holds.
_NEEDS_PLAIN = {"channels": {"prune", "share", "quantize", "half"}}
_ONCE = ("quantize", "half")
# Stages giving each layer's weight its own mask, codebook or integer grid: one tensor two layers share holds one.
_PER_LAYER_WEIGHTS = ("prune", "share", "quantize")


def _check_rewind(recipe: Recipe, rewind_weights: Mapping[str, torch.Tensor] | None) -> None:
    """A stage that rewinds needs the weights to rewind to; weights nobody rewinds to are a mistake too."""
    rewinds = [(i, cfg) for i, cfg in enumerate(recipe.stages, 1) if getattr(cfg, "rewind", None) is not None]
    if rewinds and rewind_weights is None:
        i, cfg = rewinds[0]
        point = "initialisation" if cfg.rewind == "init" else f"training step {cfg.rewind}"
        raise ConfigError(
            f"recipe {recipe.name!r}, stage {i} ({cfg.type}) rewinds to the weights at {point}: pass "
            "compress(rewind_weights=<that state_dict>), or on the command line train the baseline in the same "
            "run (leave out --weights)"
        )
    if rewind_weights is not None and not rewinds:
        raise ConfigError(f"rewind_weights were given but no stage of recipe {recipe.name!r} sets `rewind`")


def _check_model(model: nn.Module) -> None:
    """A TorchScript module or a model in another float precision is refused with what to pass instead."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            "compress takes an nn.Module, not a TorchScript module (torch.jit.script or trace): pass the module "
            "it was made from"
        )
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()})
    if any(d != "float32" for d in dtypes):
        raise ConfigError(
            f"compress takes a float32 model; its parameters are {', '.join(dtypes)}: pass model.float() and "
            "float32 inputs (the fp16 recipe makes the float16 model)"
        )
    if next(model.parameters(), None) is None:
        raise ConfigError("the model has no parameters: there is nothing to compress")


def tied_weights(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (weight tying: a classifier reusing an embedding's matrix)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def _check_tied(recipe: Recipe, model: nn.Module) -> None:
    stages = [f"{i} ({cfg.type})" for i, cfg in enumerate(recipe.stages, 1) if cfg.type in _PER_LAYER_WEIGHTS]
    tied = tied_weights(model) if stages else []
    if tied:
        first, *others = tied[0]
        raise ConfigError(
            f"{' and '.join(tied[0])} are one tensor (weight tying); recipe {recipe.name!r}, stage {stages[0]} gives "
            "each layer's weight its own mask, codebook or integer grid, which one shared tensor cannot hold: untie "
            f"them before compressing (set {others[0]} to nn.Parameter of a clone of {first}), or use a recipe "
            "without prune, share or quantize stages (fp16, channels)"
        )


def check_recipe(recipe: Recipe, model: nn.Module, rewind_weights: Mapping[str, torch.Tensor] | None = None) -> None:
    """ConfigError naming the stage and the fix, for a model that is not a float32 nn.Module, a model with
    masks or codebooks attached, any selector that matches nothing, an order that cannot work, or a rewind
    without the weights to rewind to."""
    _check_model(model)
    if has_parametrizations(model):
        raise ConfigError(
            "compress needs a plain trained model (no masks or codebooks attached); "
            "to continue from a container, load it and compress its plain copy"
        )
    _check_rewind(recipe, rewind_weights)
    _check_tied(recipe, model)
    seen: list[str] = []
    for i, cfg in enumerate(recipe.stages, 1):
        where = f"recipe {recipe.name!r}, stage {i} ({cfg.type})"
        blockers = _NEEDS_PLAIN.get(cfg.type, set()) & set(seen)
        if blockers:
            raise ConfigError(f"{where} must come before {', '.join(sorted(blockers))}: it needs a plain float model")
        if cfg.type in _ONCE and any(s in _ONCE for s in seen):
            raise ConfigError(f"{where}: a recipe may quantize or convert to float16 once (found after {seen[-1]})")
        try:
            cfg.check(model)
        except ConfigError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        seen.append(cfg.type)
    try:
        recipe.encode.check(model)
    except ConfigError as exc:
        raise type(exc)(f"recipe {recipe.name!r}, encode: {exc}") from None
