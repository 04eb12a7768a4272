"""Fake quantizers: float tensors rounded to an integer grid and back, so PyTorch computes what an
integer runtime computes, and QAT can train through the rounding (straight-through estimator).

- `ActQuant`: per-tensor affine (scale, zero point) on an unsigned 8-bit grid 0..255. Whether the
  exported file uses uint8 or int8 activations is an export choice: (s, z) on 0..255 and (s, z - 128)
  on -128..127 are the same grid, so accuracy does not depend on it, only kernel speed does.
- `WeightQuant`: a parametrization, symmetric (zero point 0, so a pruned weight stays exactly zero),
  per output channel or per group of input channels (ONNX blocked quantization), `bits` wide with the
  narrow range -(2^(b-1)-1)..2^(b-1)-1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from edgeshrink.weights import same_layout

Mode = Literal["off", "observe", "quantize"]
ACT_QMIN, ACT_QMAX = 0, 255
SAMPLES_PER_BATCH = 1 << 15
MAX_SAMPLES = 1 << 20


@torch.library.custom_op("edgeshrink::quantize_dequantize", mutates_args=())
def quantize_dequantize(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Fake quantization on the 0..255 grid with constant parameters: one op that the ONNX exporter
    writes as a QuantizeLinear/DequantizeLinear pair, with a dynamic batch dimension (aten's own
    fake-quantize op cannot be exported with symbolic shapes in torch 2.13)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, ACT_QMIN, ACT_QMAX)


@quantize_dequantize.register_fake
def _(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return torch.empty_like(x)


def quantize_dequantize_int8(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The same grid as `quantize_dequantize`, written as int8 (zero point - 128) with PyTorch's
    decomposed quantize/dequantize ops: LiteRT's converter reads such pairs as int8 tensors."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

    ops = torch.ops.quantized_decomposed
    z = zero_point - 128
    q = ops.quantize_per_tensor.default(x, scale, z, -128, 127, torch.int8)
    return ops.dequantize_per_tensor.default(q, scale, z, -128, 127, torch.int8)


class ActQuant(nn.Module):
    """Fake-quantize an activation per tensor. Modes: `observe` (record statistics, pass through),
    `quantize`, `off`. `learn=True` makes scale and zero point trainable (LSQ, Esser et al. 2020).
    `fixed=(lo, hi)` pins the grid to that range whatever calibration sees and keeps it from being learned:
    what a runtime's kernel requires of its output (LiteRT's int8 softmax writes only [0, 1) in 1/256 steps)."""

    def __init__(self, learn: bool = False, fixed: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.fixed = fixed
        # calibration statistics: not part of the model a file stores (persistent=False)
        self.register_buffer("observed_min", torch.tensor(float("inf")), persistent=False)
        self.register_buffer("observed_max", torch.tensor(float("-inf")), persistent=False)
        self.mode: Mode = "off"
        self.learn = learn and fixed is None
        self.samples: list[np.ndarray] = []
        self.register_parameter("learned_scale", None)
        if fixed is not None:
            self.set_range(*fixed)

    def extra_repr(self) -> str:
        pinned = f", fixed={self.fixed}" if self.fixed is not None else ""
        return f"mode={self.mode}, scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}{pinned}"

    def observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float()
        self.observed_min.fill_(min(float(self.observed_min), float(flat.min())))
        self.observed_max.fill_(max(float(self.observed_max), float(flat.max())))
        if sum(len(s) for s in self.samples) < MAX_SAMPLES:
            if flat.numel() > SAMPLES_PER_BATCH:
                idx = torch.randint(0, flat.numel(), (SAMPLES_PER_BATCH,), generator=_generator(len(self.samples)))
                flat = flat[idx]
            self.samples.append(flat.numpy().copy())

    def set_range(self, lo: float, hi: float) -> None:
        """Scale and zero point for the real range [lo, hi] (widened to contain 0, as 0 must be exact); a
        fixed quantizer keeps its own range."""
        scale, zero_point = affine_params(*(self.fixed or (lo, hi)))
        self.scale.fill_(scale)
        self.zero_point.fill_(zero_point)
        self.samples = []
        if self.learn:
            self.learned_scale = nn.Parameter(self.scale.detach().clone().reshape(1))

    def freeze(self) -> None:
        """Stop learning the scale: keep its current value as a plain buffer (what export writes)."""
        if self.learned_scale is not None:
            self.scale.copy_(self.learned_scale.detach().abs().clamp_min(1e-12).reshape(()))
        self.learned_scale = None
        self.learn = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            self.observe(x)
            return x
        if self.mode == "off":
            return x
        if self.learn and self.training and self.learned_scale is not None:
            out = torch._fake_quantize_learnable_per_tensor_affine(
                x, self.learned_scale, self.zero_point.float().reshape(1), ACT_QMIN, ACT_QMAX, 1.0
            )
            with torch.no_grad():
                self.scale.copy_(self.learned_scale.detach().abs().clamp_min(1e-12).reshape(()))
            return out
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, ACT_QMIN, ACT_QMAX)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


MIN_RANGE = 1e-3  # narrower (dead) activations get this range: integer runtimes need sane scales (an int32
# bias at scale input x weight overflows when the input scale is tiny: TFLite saw 240 output steps at 1e-5)


def affine_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of the 0..255 grid covering [min(lo,0), max(hi,0)], at least MIN_RANGE wide."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < MIN_RANGE:
        if lo < 0:
            lo = hi - MIN_RANGE if hi > 0 else -MIN_RANGE
        else:
            hi = lo + MIN_RANGE
    scale = (hi - lo) / (ACT_QMAX - ACT_QMIN)
    zero_point = int(np.clip(np.round(ACT_QMIN - lo / scale), ACT_QMIN, ACT_QMAX))
    return scale, zero_point


def weight_qmax(bits: int, reduced: bool = False) -> int:
    """Largest integer weight. `reduced` (8-bit only) uses -63..63: x86 CPUs without VNNI multiply
    uint8 x int8 pairs with an instruction that saturates at 16 bits, so full-range int8 weights
    overflow in ONNX Runtime's kernels there (outputs many quantization steps off)."""
    return 2 ** (bits - 2) - 1 if reduced and bits == 8 else 2 ** (bits - 1) - 1


class WeightQuant(nn.Module):
    """Parametrization: symmetric fake quantization of a weight, per output channel (`group_size` 0),
    per block of `group_size` input channels, or on one grid for the whole tensor (`per_tensor`, for
    shared weights: the codebook's values map to at most 2^bits integer codes in the whole tensor, so
    the container keeps the codebook's size). The scale keeps its per-channel shape either way.

    Training mode: the scale follows the weights (max |w| / qmax) and the rounding passes gradients
    straight through. Eval mode: the stored scale is used and the output is exactly codes x scale, so a
    model rebuilt from the stored integer codes computes the same numbers bit for bit."""

    def __init__(
        self,
        weight: torch.Tensor,
        bits: int = 8,
        group_size: int = 0,
        reduced: bool = False,
        scale: torch.Tensor | None = None,
        per_tensor: bool = False,
    ) -> None:
        super().__init__()
        self.bits = bits
        self.reduced = reduced and bits == 8
        self.group_size = 0 if per_tensor else group_size
        self.per_tensor = per_tensor
        self.enabled = True
        initial = self.compute_scale(weight.detach()) if scale is None else scale.detach().float().clone()
        self.register_buffer("scale", initial)

    def extra_repr(self) -> str:
        granularity = (
            f"group {self.group_size}" if self.group_size else "per tensor" if self.per_tensor else "per channel"
        )
        return f"bits={self.bits}, {granularity}, reduced={self.reduced}, enabled={self.enabled}"

    def compute_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """Scale of shape [out] (per channel) or [out, ceil(in / group), *kernel] (blocked, ONNX layout)."""
        qmax = weight_qmax(self.bits, self.reduced)
        if self.group_size:
            pad = (-weight.shape[1]) % self.group_size
            padded = torch.nn.functional.pad(weight.abs(), (0, 0) * (weight.dim() - 2) + (0, pad))
            blocks = padded.reshape(weight.shape[0], -1, self.group_size, *weight.shape[2:])
            amax = blocks.amax(dim=2)
        elif self.per_tensor:
            amax = weight.abs().amax().expand(weight.shape[0]).clone()
        else:
            amax = weight.abs().reshape(weight.shape[0], -1).amax(dim=1)
        return (amax / qmax).clamp_min(1e-12)

    def expanded_scale(self, weight: torch.Tensor) -> torch.Tensor:
        if self.group_size:
            return self.scale.repeat_interleave(self.group_size, dim=1)[:, : weight.shape[1]]
        return self.scale.reshape(-1, *([1] * (weight.dim() - 1)))

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer weights (as a float tensor) that the exported file stores."""
        qmax = weight_qmax(self.bits, self.reduced)
        return torch.clamp(torch.round(weight / self.expanded_scale(weight)), -qmax, qmax)

    def refresh(self, weight: torch.Tensor) -> None:
        """Set the scale from `weight` (after training moved it)."""
        with torch.no_grad():
            self.scale.copy_(self.compute_scale(weight.detach()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if not self.training:  # + 0.0 turns -0.0 into 0.0: the stored codes have no sign on zero
            return same_layout(self.integers(weight) * self.expanded_scale(weight) + 0.0, weight)
        self.refresh(weight)
        quantized = self.integers(weight) * self.expanded_scale(weight)
        return same_layout(weight + (quantized - weight).detach(), weight)  # straight-through estimator


def weight_below(module: nn.Module, quantizer: WeightQuant) -> torch.Tensor:
    """A layer's float weight as its quantizer sees it: after the masks and codebooks below it."""
    chain = module.parametrizations.weight  # type: ignore[union-attr]
    weight = chain.original
    for p in chain:
        if p is quantizer:
            break
        weight = p(weight)
    return weight
