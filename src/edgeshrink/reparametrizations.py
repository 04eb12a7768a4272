"""Training-time reparametrizations a user's model may carry (weight_norm, spectral_norm, orthogonal, a
`torch.nn.utils.parametrize` class of their own, or the older hook-based weight_norm and spectral_norm),
folded into the plain weights they compute.

They shape how a weight trains, not what the trained model computes: folding gives the same function with
an ordinary `weight` tensor, which is what pruning masks, shared codebooks and quantizers attach to, what a
container stores and what every exporter writes. TCNs and audio models commonly use weight_norm.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.errors import ConfigError
from edgeshrink.weights import own_class

# torch.nn.utils' older hook-based forms, and how each is removed
_HOOKED = {"WeightNorm": torch.nn.utils.remove_weight_norm, "SpectralNorm": torch.nn.utils.remove_spectral_norm}
_NAMES = {"_WeightNorm": "weight_norm", "_SpectralNorm": "spectral_norm", "_Orthogonal": "orthogonal"}


class Foreign(NamedTuple):
    """One reparametrized tensor edgeshrink did not attach."""

    module_name: str
    module: nn.Module
    tensor: str
    kind: str  # weight_norm, spectral_norm, orthogonal, or the user's class name
    hooked: bool  # the older forward-pre-hook form


def _ours(parametrization: nn.Module) -> bool:
    return type(parametrization).__module__.startswith("edgeshrink.")


def foreign_parametrizations(model: nn.Module) -> list[Foreign]:
    """Every reparametrized tensor of `model` that edgeshrink did not attach."""
    found = []
    for mod_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for tensor, chain in module.parametrizations.items():  # type: ignore[union-attr]
                kinds = [_NAMES.get(type(p).__name__, type(p).__name__) for p in chain if not _ours(p)]
                if kinds:
                    found.append(Foreign(mod_name, module, tensor, "+".join(kinds), hooked=False))
        for hook in module._forward_pre_hooks.values():
            name = type(hook).__name__
            if name in _HOOKED and type(hook).__module__.startswith("torch.nn.utils"):
                kind = "weight_norm" if name == "WeightNorm" else "spectral_norm"
                found.append(Foreign(mod_name, module, hook.name, f"{kind} (hook)", hooked=True))
    return found


def _fold_one(found: Foreign) -> None:
    module, tensor = found.module, found.tensor
    if found.hooked:
        hook = next(h for h in module._forward_pre_hooks.values() if getattr(h, "name", None) == tensor)
        _HOOKED[type(hook).__name__](module, tensor)
    elif any(_ours(p) for p in module.parametrizations[tensor]):  # type: ignore[index]
        raise ConfigError(
            f"{found.module_name}.{tensor}: {found.kind} and an edgeshrink mask or codebook are attached to one "
            "tensor: compress the model before attaching edgeshrink's own parametrizations"
        )
    else:
        own_class(module)  # removing deletes a property of the class, which deep copies share
        parametrize.remove_parametrizations(module, tensor, leave_parametrized=True)
        if tensor in module._buffers:  # torch leaves a tensor computed from several originals as a buffer
            value = module._buffers.pop(tensor)
            module.register_parameter(tensor, nn.Parameter(value, requires_grad=value.is_floating_point()))


def fold_reparametrizations(model: nn.Module) -> list[str]:
    """Fold every foreign reparametrization of `model` into its plain tensor, in place, in eval mode (so
    spectral_norm runs no power iteration); one note per tensor folded."""
    was_training = model.training
    model.eval()
    notes = []
    try:
        with torch.no_grad():
            for found in foreign_parametrizations(model):
                _fold_one(found)
                where = f"{found.module_name}.{found.tensor}" if found.module_name else found.tensor
                notes.append(f"{where}: {found.kind} folded into a plain tensor (computes the same)")
    finally:
        model.train(was_training)
    return notes


def folded_copy(
    model: nn.Module, state: Mapping[str, torch.Tensor] | None = None
) -> tuple[nn.Module, Mapping[str, torch.Tensor] | None, list[str]]:
    """`model` itself when it carries no foreign reparametrization, else a deep copy with them folded (the
    caller's model is left as it is); `state` (a state dict of `model`: lottery tickets' initial weights)
    as the folded model's; the notes."""
    if not foreign_parametrizations(model):
        return model, state, []
    folded = copy.deepcopy(model)
    notes = fold_reparametrizations(folded)
    if state is not None:
        twin = copy.deepcopy(model)
        twin.load_state_dict(state)
        fold_reparametrizations(twin)
        state = twin.state_dict()
    return folded, state, notes
