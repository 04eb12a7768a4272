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
Hessian cannot be inverted or whose input is not a tensor (a packed sequence) are left as they are
(nearest rounding; bias correction still applies). A layer called more than once per forward (shared
weights) is rounded for all its calls.
With `bias_correction`, the mean output error of the rounded weights is folded into the bias (Nagel
et al. 2019), measured on the same inputs.

With `float_targets` the target is the float model's output instead of the layer's own float weights
on its quantized inputs: minimise ||W x - Q x~||^2, x what the float model feeds the layer and x~ what
the quantized model feeds it (the error-correcting objective of GPFQ, Lybrand & Saab 2021, and Qronos,
Zhang et al. 2025). Its minimiser over real weights is V = W C^T H~^-1 (C = x~ x^T, H~ = x~ x~^T), and
||W x - Q x~||^2 = ||V x~ - Q x~||^2 + const, so GPTQ rounds V on H~: each layer absorbs part of the
activation rounding of the layers before it. A GRU/LSTM's input weights (`weight_ih_l0`, per-row codes,
quant/recurrent.py) are rounded the same way: their input is the quantized tensor a float recurrent
layer reads. Layers with pruned zeros keep the plain objective (V would fill the zeros).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeshrink.quant.fakequant import WeightQuant, weight_qmax
from edgeshrink.quant.prepare import set_mode, weight_quantizers
from edgeshrink.quant.recurrent import RECURRENT, recurrent_quantizers
from edgeshrink.weights import Mask

Batches = Iterable[tuple[torch.Tensor, object]]
DAMPING = 0.01  # of the mean diagonal of H: keeps the inverse stable when inputs are collinear


@dataclass(frozen=True)
class Target:
    """One weight tensor GPTQ rounds: `module.<param>` under `quantizer`, reported as `name`."""

    name: str
    module: nn.Module
    param: str
    quantizer: WeightQuant


@dataclass
class Statistics:
    """Per group: H = 2 x~^T x~ / n and the mean quantized input; with float targets also C = x~^T x / n
    and the mean float input."""

    hessian: torch.Tensor
    mean: torch.Tensor
    cross: torch.Tensor | None = None
    float_mean: torch.Tensor | None = None


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
    if isinstance(module, (nn.Linear, *RECURRENT)):  # features last; a recurrent layer's input weights
        return x.reshape(1, -1, x.shape[-1])
    kernel, stride, padding, dilation = _conv_geometry(module)  # type: ignore[misc]
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [B, C*k, L]
    groups = module.groups
    patches = patches.reshape(x.shape[0], groups, -1, patches.shape[-1])
    return patches.permute(1, 0, 3, 2).reshape(groups, -1, patches.shape[2])


def roundable(module: nn.Module, quantizer: WeightQuant, param: str = "weight") -> bool:
    """Whether GPTQ can round this tensor: a Linear's or an unfoldable conv's weight, or a recurrent
    layer's first input weights, on its own per-channel grid, with at most a pruning mask under the
    quantizer (so the stored weight can be set to the codes)."""
    under = list(module.parametrizations[param])[:-1]  # type: ignore[union-attr,index]
    if quantizer.per_tensor or not quantizer.enabled or not all(isinstance(p, Mask) for p in under):
        return False
    if isinstance(module, RECURRENT):
        return param == "weight_ih_l0"
    return isinstance(module, nn.Linear) or _conv_geometry(module) is not None


def _targets(model: nn.Module) -> list[Target]:
    """Every tensor of `model` GPTQ can round."""
    layers = [Target(name, m, "weight", q) for name, m, q in weight_quantizers(model)]
    layers += [Target(key, m, param, q) for key, m, param, q in recurrent_quantizers(model)]
    return [t for t in layers if roundable(t.module, t.quantizer, t.param)]


def _execution_order(model: nn.Module, targets: list[Target], x: torch.Tensor) -> dict[Target, int]:
    """`targets` in the order the model first calls their layers on `x`, each with how many times one
    forward calls it (layers it never calls are left out)."""
    calls: dict[Target, int] = {}

    def hooked(target: Target):
        def hook(mod: nn.Module, args: tuple) -> None:
            calls[target] = calls.get(target, 0) + 1

        return target.module.register_forward_pre_hook(hook)

    hooks = [hooked(target) for target in targets]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


class _Reached(Exception):
    """Raised by a pre-hook once the layer's inputs are captured: the rest of the forward is not needed."""


def _layer_inputs(model: nn.Module, module: nn.Module, x: torch.Tensor, calls: int) -> torch.Tensor | None:
    """`module`'s input columns over its `calls` calls when `model` runs on `x` (the forward stops after
    the last); None when its input is not a tensor (a packed sequence)."""
    seen: list[torch.Tensor | None] = []

    def hook(mod, args):
        tensor = isinstance(args[0], torch.Tensor)
        seen.append(_columns(mod, args[0].detach().double()) if tensor else None)
        if len(seen) == calls or not tensor:
            raise _Reached

    handle = module.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if not seen or any(cols is None for cols in seen):
        return None
    return torch.cat(seen, dim=1)  # type: ignore[arg-type]


def _statistics(
    model: nn.Module,
    module: nn.Module,
    inputs: list[torch.Tensor],
    calls: int,
    reference: tuple[nn.Module, nn.Module] | None,
) -> Statistics | None:
    """The layer's input statistics over the calibration inputs; `reference` is (float model, its copy of
    the layer) when the target is the float model's output. None when an input is not a tensor."""
    h = mean = cross = float_mean = 0
    n = 0
    for x in inputs:
        cols = _layer_inputs(model, module, x, calls)
        exact = _layer_inputs(*reference, x, calls) if reference is not None else cols
        if cols is None or exact is None or exact.shape != cols.shape:
            return None
        h, mean, n = h + cols.transpose(1, 2) @ cols, mean + cols.sum(dim=1), n + cols.shape[1]
        if reference is not None:
            cross, float_mean = cross + cols.transpose(1, 2) @ exact, float_mean + exact.sum(dim=1)
    if reference is None:
        return Statistics(2 * h / n, mean / n)
    return Statistics(2 * h / n, mean / n, cross / n, float_mean / n)  # type: ignore[operator]


def _damped(hessian: torch.Tensor) -> torch.Tensor:
    """A copy of `hessian` that can be inverted: inputs that were always zero get a unit diagonal, and
    DAMPING x the mean diagonal is added to all."""
    h = hessian.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    return h + DAMPING * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)


def gptq_codes(
    weight: torch.Tensor, scale: torch.Tensor, hessian: torch.Tensor, qmax: int, keep: torch.Tensor
) -> torch.Tensor | None:
    """Integer codes for `weight` [out, cols] on the grid `scale` (same shape), rounded column by column
    with the error moved onto later columns (GPTQ). `keep` marks elements forced to their nearest code.
    None when the Hessian cannot be inverted."""
    cols = weight.shape[1]
    h = _damped(hessian)
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


def _float_target(weight: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor) -> torch.Tensor:
    """V = W C^T H~^-1: the real weights whose output on the quantized inputs is closest to the float
    model's output. Written V = W + W (C - H~)^T H~^-1 and damped as GPTQ damps H~ in the correction
    term only, so V = W exactly when the inputs carry no quantization error (damping the whole product
    would shrink W along the inputs' weak directions)."""
    exact = hessian.double() / 2
    h = _damped(exact)
    w = weight.double()
    return (w + torch.linalg.solve(h, (cross.double() - exact) @ w.T).T).float()


def _bias_name(target: Target) -> str | None:
    """The bias the rounding's mean error folds into (a recurrent layer's input bias), None if it has none."""
    if isinstance(target.module, RECURRENT):
        return "bias_ih_l0" if target.module.bias else None
    return "bias"


def _round_layer(target: Target, stats: Statistics, bias: bool) -> bool:
    """Set the tensor to its GPTQ codes x scale (and shift its bias); False, and the layer untouched, when
    a group's Hessian cannot be inverted."""
    module, quantizer = target.module, target.quantizer
    quantizer.enabled = False
    weight = getattr(module, target.param).detach().float()
    quantizer.enabled = True
    scale = quantizer.expanded_scale(weight).expand_as(weight)
    qmax = weight_qmax(quantizer.bits, quantizer.reduced)
    keep = (weight == 0) | (weight.abs() >= scale * (qmax - 0.5))  # zeros, and the elements that set a scale
    groups = stats.hessian.shape[0]
    flat_w, flat_s, flat_k = (t.reshape(groups, weight.shape[0] // groups, -1) for t in (weight, scale, keep))
    goal, corrected = flat_w, stats.cross is not None and not bool((weight == 0).any())
    if corrected:  # the elements that set a scale keep their own code, so the grid stays the calibrated one
        goal = torch.stack([_float_target(flat_w[g], stats.hessian[g], stats.cross[g]) for g in range(groups)])
        goal = torch.where(flat_k, flat_w, goal)
    per_group = [gptq_codes(goal[g], flat_s[g], stats.hessian[g], qmax, flat_k[g]) for g in range(groups)]
    if any(c is None for c in per_group):
        return False
    quantized = torch.stack(per_group) * flat_s  # type: ignore[arg-type]
    with torch.no_grad():
        bias_name = _bias_name(target)
        if bias and bias_name is not None:
            mean = stats.mean.float().unsqueeze(-1)
            exact = flat_w @ (stats.float_mean.float().unsqueeze(-1) if corrected else mean)  # type: ignore[union-attr]
            shift = (exact - quantized @ mean).reshape(-1)
            if getattr(module, bias_name) is None:
                setattr(module, bias_name, nn.Parameter(torch.zeros_like(shift)))
            getattr(module, bias_name).add_(shift)
        module.parametrizations[target.param].original.copy_(quantized.reshape(weight.shape))  # type: ignore[index]
    return True


def _float_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` with every quantizer off: the float model the quantized one approximates."""
    reference = copy.deepcopy(model)
    set_mode(reference, "off")
    for _, _, _, quantizer in recurrent_quantizers(reference):
        quantizer.enabled = False
    for _, _, quantizer in weight_quantizers(reference):
        quantizer.enabled = False
    return reference


@torch.no_grad()
def gptq_round(
    model: nn.Module,
    batches: Batches,
    num_batches: int = 16,
    bias_correction: bool = True,
    float_targets: bool = False,
) -> list[str]:
    """Round every roundable tensor of a calibrated fake-quantized `model` by GPTQ, in execution order;
    returns the names of the tensors rounded (layer names; 'gru.weight_ih_l0' for a recurrent layer).
    The weights kept are the rounded ones (codes x scale). `float_targets`: aim at the float model's
    output (see the module docstring)."""
    inputs = [x for i, (x, _) in enumerate(batches) if i < num_batches]
    if not inputs:
        raise ValueError("GPTQ rounding needs at least one batch of calibration data")
    model.eval()
    reference = _float_copy(model).eval() if float_targets else None
    names = {id(m): name for name, m in model.named_modules()}
    rounded = []
    for target, calls in _execution_order(model, _targets(model), inputs[0]).items():
        twin = (reference, reference.get_submodule(names[id(target.module)])) if reference is not None else None
        stats = _statistics(model, target.module, inputs, calls, twin)
        if stats is not None and _round_layer(target, stats, bias_correction):
            rounded.append(target.name)
    return rounded
