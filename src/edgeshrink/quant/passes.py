"""Passes over a prepared (fake-quantized) model: calibration, bias correction, and the per-layer
sensitivity that drives mixed precision."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edgeshrink.quant.calibrate import Method, calibrate_range
from edgeshrink.quant.prepare import activation_quantizers, set_mode, weight_quantizers

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def batch_inputs(batches: Batches, limit: int) -> list[torch.Tensor]:
    out = []
    for i, (x, _) in enumerate(batches):
        if i >= limit:
            break
        out.append(x)
    return out


@torch.no_grad()
def calibrate(
    model: nn.Module, batches: Batches, *, method: Method = "minmax", percentile: float = 99.99, num_batches: int = 16
) -> int:
    """Observe activations on up to `num_batches` batches and set every quantizer's range; returns the
    number of calibration examples seen. Weights are quantized while observing, so the activation
    ranges are those the quantized model produces."""
    model.eval()
    set_mode(model, "observe")
    seen = 0
    for x in batch_inputs(batches, num_batches):
        model(x)
        seen += x.shape[0]
    if seen == 0:
        raise ValueError("calibration needs at least one batch of data")
    for _, quantizer in activation_quantizers(model):
        samples = np.concatenate(quantizer.samples) if quantizer.samples else np.zeros(0, dtype=np.float32)
        lo, hi = float(quantizer.observed_min), float(quantizer.observed_max)
        if not np.isfinite(lo):  # never reached on the calibration data
            lo, hi = 0.0, 0.0
        quantizer.set_range(*calibrate_range(samples, lo, hi, method, percentile))
    set_mode(model, "quantize")
    return seen


@torch.no_grad()
def correct_bias(model: nn.Module, batches: Batches, num_batches: int = 8) -> dict[str, float]:
    """Empirical bias correction (Nagel et al. 2019): add to each quantized layer's bias the mean
    per-channel difference between its float-weight and quantized-weight outputs on the same inputs.
    Returns the largest correction per layer."""
    model.eval()
    layers = weight_quantizers(model)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    for name, module, quantizer in layers:

        def hook(mod, args, output, name=name, quantizer=quantizer):
            quantizer.enabled = False
            reference = mod.forward(*args)
            quantizer.enabled = True
            channel = -1 if isinstance(mod, nn.Linear) else 1  # Linear: features last, also on [B, T, C] inputs
            diff = (reference - output).movedim(channel, 0)
            diff = diff.reshape(diff.shape[0], -1)
            sums[name] = sums.get(name, 0) + diff.sum(dim=1)
            counts[name] = counts.get(name, 0) + diff.shape[1]

        hooks.append(module.register_forward_hook(hook))
    try:
        for x in batch_inputs(batches, num_batches):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    applied = {}
    for name, module, _ in layers:
        if name not in sums:
            continue
        shift = sums[name] / counts[name]
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros(shift.shape[0], dtype=shift.dtype))
        module.bias.add_(shift)
        applied[name] = float(shift.abs().max())
    return applied


def layer_sensitivity(
    build: Callable[[set[str]], nn.Module],
    layers: list[str],
    evaluate: Callable[[nn.Module], float],
    reference_accuracy: float,
) -> dict[str, float]:
    """Accuracy drop (points) when only one layer is quantized, for each layer: `build(layers)` returns
    a calibrated model with exactly those layers quantized."""
    return {name: reference_accuracy - evaluate(build({name})) for name in layers}
