"""Per-weight state shared by the stages: pruning masks and weight-sharing codebooks.

Both are `torch.nn.utils.parametrize` parametrizations, so they are applied in every forward pass and
during every fine-tuning, whichever training loop runs, and a later stage sees them:
- `Mask`: weight = original * mask. Masks only ever shrink (`attach_mask` intersects).
- `SharedWeights`: weight = centroids[assignment]; pruned positions point at a fixed zero. The
  centroids are a Parameter, so autograd sums the gradients of every weight of a cluster into its
  centroid: exactly the centroid fine-tuning of Deep Compression.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.errors import ConfigError


class Mask(nn.Module):
    """Parametrization: zero the pruned entries."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.float32).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # where(), not a product: weight * 0 gives -0.0 for negative weights, a nonzero bit pattern.
        return same_layout(torch.where(self.mask.bool(), weight, torch.zeros((), dtype=weight.dtype)), weight)


class _Lookup(torch.autograd.Function):
    """table[index], whose backward sums each entry's gradients with `bincount`: deterministic, where the
    backward of indexing (index_put_ with accumulate) adds in a different order on every multi-threaded run,
    so the same recipe and seed would not give the same file twice."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(index)
        ctx.entries = table.numel()
        return table[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        summed = torch.bincount(index.reshape(-1), weights=grad.reshape(-1).float(), minlength=ctx.entries)
        return summed.to(grad.dtype), None


class SharedWeights(nn.Module):
    """Parametrization: every weight is one of a few shared values (or zero where pruned)."""

    def __init__(self, centroids: torch.Tensor, assignment: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().to(torch.float32).clone())
        self.register_buffer("assignment", assignment.detach().to(torch.int64).clone())  # -1: pruned

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        table = F.pad(self.centroids, (1, 0))  # table[0] is the fixed zero of pruned weights
        return same_layout(_Lookup.apply(table, self.assignment + 1).to(weight.dtype), weight)


def same_layout(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`value` with the strides of `like`: a channels-last conv weight stays channels-last, as the training
    loop set it. Elementwise ops and lookups may return the weight contiguous (a one-channel weight is both
    layouts at once, and torch picks contiguous), and oneDNN then runs that convolution, the pooling after it
    and the next convolution's backward in mixed layouts (LeNet-5's shared-weight epoch 20 s against 13 s)."""
    if value.shape != like.shape or value.stride() == like.stride():
        return value
    return torch.empty_like(like, dtype=value.dtype).copy_(value)


def has_parametrizations(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in model.modules())


def _parametrizations(module: nn.Module, name: str) -> list[nn.Module]:
    if not parametrize.is_parametrized(module, name):
        return []
    return list(module.parametrizations[name])  # type: ignore[index]


def get_mask(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The boolean keep-mask of a tensor, or None when it was never pruned."""
    mask = None
    for p in _parametrizations(module, name):
        if isinstance(p, Mask):
            current = p.mask.bool()
        elif isinstance(p, SharedWeights):
            current = p.assignment >= 0
        else:
            continue
        mask = current if mask is None else mask & current
    return mask


def get_shared(module: nn.Module, name: str = "weight") -> SharedWeights | None:
    for p in _parametrizations(module, name):
        if isinstance(p, SharedWeights):
            return p
    return None


def attach_mask(module: nn.Module, name: str, keep: torch.Tensor) -> torch.Tensor:
    """Intersect the tensor's mask with `keep` (a pruned weight never comes back); returns the new mask."""
    keep = keep.bool()
    current = get_mask(module, name)
    if current is not None:
        keep = keep & current
    for p in _parametrizations(module, name):
        if isinstance(p, Mask):
            p.mask.copy_(keep.to(p.mask.dtype))
            break
    else:
        _register(module, name, Mask(keep))
    shared = get_shared(module, name)
    if shared is not None:
        shared.assignment.masked_fill_(~keep, -1)
    return keep


def attach_codebook(module: nn.Module, name: str, centroids: torch.Tensor, assignment: torch.Tensor) -> None:
    """Replace a tensor by shared values; an existing codebook is replaced, masks are kept."""
    shared = get_shared(module, name)
    if shared is not None:
        shared.centroids = nn.Parameter(centroids.detach().to(torch.float32).clone())
        shared.assignment = assignment.detach().to(torch.int64).clone()
        return
    _register(module, name, SharedWeights(centroids, assignment), unsafe=True)


def _register(module: nn.Module, name: str, parametrization: nn.Module, unsafe: bool = False) -> None:
    """`register_parametrization`, safe on deep copies.

    torch puts each parametrized tensor's property on the module's generated class, which `copy.deepcopy`
    shares between a module and its copies: parametrizing a second tensor (the bias) of a copy would add the
    property to the original too, whose `bias` then fails (no such parametrization). So a module already
    parametrized first gets a class of its own, with the same base and properties: removing the
    parametrizations later still restores the plain module class."""
    if parametrize.is_parametrized(module) and not parametrize.is_parametrized(module, name):
        own_class(module)
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)


def own_class(module: nn.Module) -> None:
    """Give a parametrized module a generated class of its own (same name, base and properties), so adding
    or removing a parametrization changes it alone, not the deep copies that share its class."""
    cls = type(module)
    namespace = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)


def top_magnitude_mask(magnitude: torch.Tensor, keep: int) -> torch.Tensor:
    """True at the `keep` largest entries of `magnitude` (its shape), False elsewhere."""
    mask = torch.zeros(magnitude.numel(), dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(magnitude.reshape(-1), keep, sorted=False).indices] = True
    return mask.reshape(magnitude.shape)


def mask_from_zeros(module: nn.Module, name: str = "weight") -> None:
    """Turn the exact zeros of a loaded tensor into a mask, so a model decoded from a container keeps its
    sparsity through later stages."""
    tensor = getattr(module, name)
    if bool((tensor == 0).any()):
        attach_mask(module, name, tensor != 0)


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict a plain model of the same architecture would have: parametrized tensors computed,
    parametrization internals (originals, masks, centroids) left out."""
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    replaced: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for mod_name, module in model.named_modules():
            if not parametrize.is_parametrized(module):
                continue
            prefix = f"{mod_name}." if mod_name else ""
            for tensor_name in module.parametrizations:  # type: ignore[union-attr]
                replaced[f"{prefix}parametrizations.{tensor_name}."] = getattr(module, tensor_name).detach().clone()
    for key, value in state.items():
        group = next((g for g in replaced if key.startswith(g)), None)
        if group is None:
            out[key] = value.detach()
            continue
        plain = group.replace("parametrizations.", "", 1).rstrip(".")
        if plain not in out:
            out[plain] = replaced[group]
    return out


def bake_in_place(model: nn.Module) -> nn.Module:
    """Make every parametrized tensor of `model` a plain Parameter holding its computed value.

    Not `parametrize.remove_parametrizations`: a deep copy of a parametrized module shares its
    generated class with the original, and removing a parametrization deletes the property from that
    shared class, which would break the original model."""
    with torch.no_grad():
        for module in model.modules():
            if not parametrize.is_parametrized(module):
                continue
            computed = {name: getattr(module, name).detach().clone() for name in module.parametrizations}  # type: ignore[union-attr]
            module.__class__ = module.__class__.__bases__[0]
            del module._modules["parametrizations"]
            for name, value in computed.items():
                setattr(module, name, nn.Parameter(value, requires_grad=value.is_floating_point()))
    return model


def baked_copy(model: nn.Module) -> nn.Module:
    """A copy in which every parametrized tensor is a plain tensor holding its computed value."""
    import copy

    return bake_in_place(copy.deepcopy(model))


def prunable_weights(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every layer with a weight matrix or kernel: Linear and Conv layers."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d):
            yield name, module


def rewind_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Reset every parameter and buffer of `model` to the plain state dict `state` (as `state_dict()` of
    the unpruned model gives it), keeping masks and codebook assignments: a parametrized weight's original
    takes the value, so pruned entries stay zero. Keys `state` lacks are an error (a lottery ticket rewound
    only in part is not the ticket)."""
    targets: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            targets[prefix + name] = tensor
        if parametrize.is_parametrized(module):
            for name in module.parametrizations:  # type: ignore[union-attr]
                targets[prefix + name] = module.parametrizations[name].original  # type: ignore[index]
    plain = {k: v for k, v in targets.items() if ".parametrizations." not in f".{k}" and k in state}
    missing = sorted(k for k in targets if ".parametrizations." not in f".{k}" and k not in state)
    if missing:
        raise ConfigError(f"the rewind weights have no {missing[0]!r}: pass the full state_dict() of this model")
    with torch.no_grad():
        for key, tensor in plain.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ConfigError(
                    f"rewind weight {key!r} has shape {tuple(state[key].shape)}, the model's is {tuple(tensor.shape)}"
                )
            tensor.copy_(state[key])
