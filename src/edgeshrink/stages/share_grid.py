"""Weight sharing on an already quantized layer: the codebook is put on one integer grid per tensor.

A quantized layer computes codes x scale with per-channel scales, so a float codebook would leave the
grid again and its values would map to different codes in every channel. Here the layer's current
weights (on the grid) are clustered, the centroids are rounded onto a single grid for the tensor
(scale = max |centroid| / qmax), and the parametrizations are rebuilt in the order every other path
uses: mask, codebook, then a per-tensor `WeightQuant`. The tensor then holds at most 2^bits distinct
integer codes, which is what makes the container and a look-up-table export small.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.quant.fakequant import WeightQuant, weight_qmax
from edgeshrink.weights import Mask, SharedWeights, get_mask


def weight_quantizer(module: nn.Module) -> WeightQuant | None:
    """The layer's WeightQuant parametrization, if it is quantized."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return next((p for p in module.parametrizations.weight if isinstance(p, WeightQuant)), None)  # type: ignore[union-attr]


def on_grid(centroids: torch.Tensor, bits: int, reduced: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids rounded onto one symmetric grid, the grid's scale)."""
    qmax = weight_qmax(bits, reduced)
    scale = (centroids.abs().max() / qmax).clamp_min(1e-12) if centroids.numel() else torch.tensor(1.0)
    return torch.round(centroids / scale).clamp(-qmax, qmax) * scale, scale


def share_quantized(module: nn.Module, centroids: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Rebuild a quantized layer as mask -> codebook on its grid -> per-tensor quantizer; returns the
    centroids as placed (on the grid). `assignment` is -1 where the weight is pruned."""
    old = weight_quantizer(module)
    assert old is not None
    mask = get_mask(module, "weight")
    snapped, scale = on_grid(centroids.float(), old.bits, old.reduced)
    was_training = old.training
    parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    if mask is not None:
        parametrize.register_parametrization(module, "weight", Mask(mask))
    parametrize.register_parametrization(module, "weight", SharedWeights(snapped, assignment), unsafe=True)
    per_channel = scale.expand(module.weight.shape[0]).clone()
    quantizer = WeightQuant(module.weight, old.bits, 0, old.reduced, scale=per_channel, per_tensor=True)
    quantizer.train(was_training)
    parametrize.register_parametrization(module, "weight", quantizer)
    return snapped
