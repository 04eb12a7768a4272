"""Rounding chosen for the layer's output, not weight by weight (GPTQ, Frantar et al. 2023; the
Optimal Brain Quantization of Frantar & Alistarh 2022 with a fixed grid).

Rounding each weight to its nearest grid point minimises the weight error; what matters is the
layer's output error on the inputs it sees, ||W x - Q x||^2 summed over calibration inputs. Its
Hessian is H = X^T X; GPTQ rounds one input column at a time (largest diag(H) first) and moves the
error of each rounded column onto the columns not rounded yet, weighted by the inverse Hessian, so
later roundings compensate earlier ones. Layers are processed in the order the model runs them, each
on inputs from the already-rounded layers before it (what the integer model sees).

The grid (per-channel or per-group scales) stays the one calibration chose: every element whose
magnitude set its scale keeps its nearest code (qmax), and exact zeros (pruned weights) stay zero, so
the scales recomputed from the rounded weights are unchanged and sparsity survives. Layers on a
shared codebook (one grid per tensor), convolutions `F.unfold` cannot express, and layers whose input
Hessian cannot be inverted are left as they are (nearest rounding; bias correction still applies).
With `bias_correction`, the mean output error of the rounded weights is folded into the bias (Nagel
et al. 2019), measured on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from edgeshrink.quant.fakequant import WeightQuant, weight_qmax
from edgeshrink.quant.prepare import weight_quantizers
from edgeshrink.weights import Mask

Batches = Iterable[tuple[torch.Tensor, object]]
DAMPING = 0.01  # of the mean diagonal of H: keeps the inverse stable when inputs are collinear


def _conv_geometry(module: nn.Module) -> tuple[tuple[int, ...], ...] | None:
    """(kernel, stride, padding, dilation) as 2-D pairs for F.unfold, or None if it cannot express the conv."""
    if not isinstance(module, (nn.Conv1d, nn.Conv2d)) or module.padding_mode != "zeros":
        return None
    if isinstance(module.padding, str):
        return None
    kernel, stride, padding, dilation = (
        tuple(v) for v in (module.kernel_size, module.stride, module.padding, module.dilation)
    )
    if isinstance(module, nn.Conv1d):  # as a 2-D conv over [B, C, 1, L]
        return (1, *kernel), (1, *stride), (0, *padding), (1, *dilation)
    return kernel, stride, padding, dilation


def _columns(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as [groups, samples, columns]: what each output channel's weights multiply."""
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1])
    kernel, stride, padding, dilation = _conv_geometry(module)  # type: ignore[misc]
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [B, C*k, L]
    groups = module.groups
    patches = patches.reshape(x.shape[0], groups, -1, patches.shape[-1])
    return patches.permute(1, 0, 3, 2).reshape(groups, -1, patches.shape[2])


def roundable(module: nn.Module, quantizer: WeightQuant) -> bool:
    """Whether GPTQ can round this layer: a Linear or an unfoldable conv, on its own per-channel grid,
    with at most a pruning mask under the quantizer (so the stored weight can be set to the codes)."""
    under = list(module.parametrizations.weight)[:-1]  # type: ignore[union-attr]
    if quantizer.per_tensor or not quantizer.enabled or not all(isinstance(p, Mask) for p in under):
        return False
    return isinstance(module, nn.Linear) or _conv_geometry(module) is not None


def _execution_order(model: nn.Module, layers: list[tuple[str, nn.Module, WeightQuant]], x: torch.Tensor) -> list:
    """`layers` in the order the model first calls them on `x` (layers it never calls are left out)."""
    order: list = []

    def hooked(entry: tuple[str, nn.Module, WeightQuant]):
        def hook(mod: nn.Module, args: tuple) -> None:
            if entry not in order:
                order.append(entry)

        return entry[1].register_forward_pre_hook(hook)

    hooks = [hooked(entry) for entry in layers]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def _statistics(model: nn.Module, module: nn.Module, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """H = 2 X^T X / n and the mean input column, per group, over the layer's calibration inputs."""
    sums: dict[str, torch.Tensor] = {}

    def hook(mod, args):
        cols = _columns(mod, args[0].detach().double())
        sums["h"] = sums.get("h", 0) + cols.transpose(1, 2) @ cols
        sums["mean"] = sums.get("mean", 0) + cols.sum(dim=1)
        sums["n"] = sums.get("n", 0) + cols.shape[1]

    handle = module.register_forward_pre_hook(hook)
    try:
        for x in inputs:
            model(x)
    finally:
        handle.remove()
    return 2 * sums["h"] / sums["n"], sums["mean"] / sums["n"]


def gptq_codes(
    weight: torch.Tensor, scale: torch.Tensor, hessian: torch.Tensor, qmax: int, keep: torch.Tensor
) -> torch.Tensor | None:
    """Integer codes for `weight` [out, cols] on the grid `scale` (same shape), rounded column by column
    with the error moved onto later columns (GPTQ). `keep` marks elements forced to their nearest code.
    None when the Hessian cannot be inverted."""
    cols = weight.shape[1]
    h = hessian.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += DAMPING * torch.diagonal(h).mean() * torch.eye(cols, dtype=h.dtype)
    order = torch.argsort(torch.diagonal(h), descending=True)
    h = h[order][:, order]
    try:
        inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    except torch.linalg.LinAlgError:  # not positive definite even damped (non-finite inputs)
        return None
    w, s, k = weight[:, order].clone(), scale[:, order], keep[:, order]
    nearest = torch.clamp(torch.round(w / s), -qmax, qmax)
    codes = torch.zeros_like(w)
    for j in range(cols):
        q = torch.where(k[:, j], nearest[:, j], torch.clamp(torch.round(w[:, j] / s[:, j]), -qmax, qmax))
        codes[:, j] = q
        error = (w[:, j] - q * s[:, j]) / inverse[j, j]
        w[:, j + 1 :] -= error[:, None] * inverse[j, j + 1 :][None, :]
    restored = torch.empty_like(codes)
    restored[:, order] = codes
    return restored


def _round_layer(
    module: nn.Module, quantizer: WeightQuant, hessian: torch.Tensor, mean: torch.Tensor, bias: bool
) -> bool:
    """Set the layer's weights to its GPTQ codes x scale (and shift its bias); False, and the layer
    untouched, when a group's Hessian cannot be inverted."""
    quantizer.enabled = False
    weight = module.weight.detach().float()
    quantizer.enabled = True
    scale = quantizer.expanded_scale(weight).expand_as(weight)
    qmax = weight_qmax(quantizer.bits, quantizer.reduced)
    keep = (weight == 0) | (weight.abs() >= scale * (qmax - 0.5))  # zeros, and the elements that set a scale
    groups = hessian.shape[0]
    flat_w, flat_s, flat_k = (t.reshape(groups, weight.shape[0] // groups, -1) for t in (weight, scale, keep))
    per_group = [gptq_codes(flat_w[g], flat_s[g], hessian[g], qmax, flat_k[g]) for g in range(groups)]
    if any(c is None for c in per_group):
        return False
    codes = torch.stack(per_group)  # type: ignore[arg-type]
    rounded = (codes * flat_s).reshape(weight.shape)
    with torch.no_grad():
        if bias:
            shift = ((flat_w - codes * flat_s) @ mean.float().unsqueeze(-1)).reshape(-1)
            if module.bias is None:
                module.bias = nn.Parameter(torch.zeros_like(shift))
            module.bias.add_(shift)
        module.parametrizations.weight.original.copy_(rounded)  # type: ignore[union-attr]
    return True


@torch.no_grad()
def gptq_round(model: nn.Module, batches: Batches, num_batches: int = 16, bias_correction: bool = True) -> list[str]:
    """Round every roundable layer of a calibrated fake-quantized `model` by GPTQ, in execution order;
    returns the names of the layers rounded. The weights kept are the rounded ones (codes x scale)."""
    inputs = [x for i, (x, _) in enumerate(batches) if i < num_batches]
    if not inputs:
        raise ValueError("GPTQ rounding needs at least one batch of calibration data")
    model.eval()
    layers = [(name, m, q) for name, m, q in weight_quantizers(model) if roundable(m, q)]
    rounded = []
    for name, module, quantizer in _execution_order(model, layers, inputs[0]):
        hessian, mean = _statistics(model, module, inputs)
        if _round_layer(module, quantizer, hessian, mean, bias_correction):
            rounded.append(name)
    return rounded
