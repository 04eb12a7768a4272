"""Per-layer sparsity from a sensitivity analysis (Han et al., NeurIPS 2015, Figure 6).

Each layer is pruned alone by magnitude, without retraining, while every other layer stays as it is; its
sparsity is the highest at which validation accuracy stays within `drop` points of the unpruned model's.
A layer with many redundant weights (a wide fully connected layer) tolerates far more than a small one
(the first convolution), and the same tolerance gives different sparsities on different models, which
one global threshold cannot. The search is a bisection on each layer's sparsity, up to the layer's
configured sparsity as a cap: accuracy falls (nearly) monotonically with the sparsity of one layer.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.stages.base import StageContext
from edgeshrink.weights import attach_mask, top_magnitude_mask

BISECTIONS = 10  # the sparsity found is within cap / 2^10 of the boundary


def _accuracy_pruned(model: nn.Module, name: str, sparsity: float, ctx: StageContext) -> float:
    trial = copy.deepcopy(model)
    module = trial.get_submodule(name)
    with torch.no_grad():
        keep = max(1, round(module.weight.numel() * (1.0 - sparsity)))
        attach_mask(module, "weight", top_magnitude_mask(module.weight.abs(), keep))
    return ctx.accuracy(trial)  # type: ignore[return-value]


def layer_sparsity(model: nn.Module, name: str, cap: float, floor: float, ctx: StageContext) -> float:
    """The highest sparsity of layer `name` in [0, cap] whose accuracy, pruned alone, is >= `floor`."""
    if _accuracy_pruned(model, name, cap, ctx) >= floor:
        return cap
    low, high = 0.0, cap
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        low, high = (middle, high) if _accuracy_pruned(model, name, middle, ctx) >= floor else (low, middle)
    return round(low, 4)


def sensitivity_sparsities(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    caps: dict[str, float],
    drop: float,
    ctx: StageContext,
    notes: list[str],
) -> dict[str, float]:
    """Each layer's sparsity from its sensitivity curve (see the module docstring); progress and notes say
    what each layer got."""
    reference = ctx.accuracy(model)
    if reference is None:
        raise ConfigError(
            "prune: scheme 'sensitivity' measures each layer's accuracy on validation data: pass val_loader= "
            "or eval_fn= (or choose scheme 'global' or 'layerwise')"
        )
    chosen = {}
    for name, _ in layers:
        chosen[name] = layer_sparsity(model, name, caps[name], reference - drop, ctx)
        ctx.progress.line(f"[prune] sensitivity: {name} alone to {100 * chosen[name]:.1f}% within {drop:g} points")
    notes.append(
        f"sensitivity analysis ({drop:g} points per layer alone, {reference:.2f}% unpruned): "
        + ", ".join(f"{name} {100 * s:.1f}%" for name, s in chosen.items())
    )
    return chosen
