"""Which 8-bit layers overflow ONNX Runtime's 16-bit pair sums on x86 CPUs without VNNI.

There, MLAS multiplies uint8 activation codes by int8 weight codes with an instruction (vpmaddubsw) that adds
each pair of neighbouring products along the reduction axis into a signed 16-bit register, saturating at
-32768..32767. Full-range weights (-127..127) overflow it only when two large activation codes meet two
large weights of the same sign; 7-bit weights (-63..63) never do. Instead of giving up a bit on every layer,
the `quantize` stage replays each layer's pairs on its calibration inputs (integer codes, the runtime's
reduction order) and gives the reduced range only to the layers where a pair overflows and the reduced range
gives the smaller output error (`RangeChoice`).

The reduction order replayed is the one MLAS packs: input features for Linear; for convolutions kernel row,
kernel column, then input channel (channels last). Depthwise convolutions are not replayed: their kernel
widens the codes to 16 bits before multiplying, so no pair sum saturates. The exporter's verification in
ONNX Runtime checks the result either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from edgeshrink.quant.fakequant import ACT_QMAX, ACT_QMIN, ActQuant, WeightQuant, weight_below
from edgeshrink.quant.op_grids import input_quantizer

PAIR_MIN, PAIR_MAX = -32768, 32767
_CHUNK = 1 << 24  # products per step of the replay (int32: 64 MB)


@dataclass
class RangeChoice:
    """One layer's replay: overflowing pair sums at full range, and the squared output error against its float
    weights at full range (overflows included) and at -63..63, summed over the calibration inputs."""

    overflows: int = 0
    full_error: float = 0.0
    reduced_error: float = 0.0

    @property
    def reduced(self) -> bool:
        return self.overflows > 0 and self.reduced_error < self.full_error

    def to_dict(self) -> dict:
        return {**self.__dict__, "reduced": self.reduced}


def overflow_excess(codes: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, int]:
    """What 16-bit pair saturation does to uint8 `codes` [M, K] times int8 `weights` [N, K] when neighbouring
    products along K are added in pairs (K padded with a zero): the change of each of the [M, N] integer
    accumulators, and how many pair sums left the 16-bit range."""
    excess = torch.zeros(codes.shape[0], weights.shape[0])
    if codes.shape[1] % 2:
        codes, weights = F.pad(codes, (0, 1)), F.pad(weights, (0, 1))
    a, w = codes.to(torch.int32), weights.to(torch.int32)
    w_pairs = w.reshape(w.shape[0], -1, 2)  # [N, K/2, 2]
    same_sign = (w_pairs[..., 0] * w_pairs[..., 1]) > 0  # opposite signs stay within 16 bits: 255 x 127 fits
    bound = (a.amax(dim=0).reshape(-1, 2).unsqueeze(0) * w_pairs.abs()).sum(dim=-1)
    outputs, pairs = torch.nonzero(same_sign & (bound > PAIR_MAX), as_tuple=True)
    left, right = a[:, 0::2], a[:, 1::2]
    step, count = max(1, _CHUNK // a.shape[0]), 0
    for start in range(0, outputs.numel(), step):
        n, j = outputs[start : start + step], pairs[start : start + step]
        sums = left[:, j] * w_pairs[n, j, 0] + right[:, j] * w_pairs[n, j, 1]
        clipped = sums.clamp(PAIR_MIN, PAIR_MAX)
        count += int((clipped != sums).sum())
        excess.index_add_(1, n, (clipped - sums).float())
    return excess, count


@dataclass
class _Grid:
    """One group of a layer's weight rows [N, K] (K in the runtime's order): the float weights, the codes and
    scales [N] at full range, and the dequantized weights at full range and at -63..63."""

    weight: torch.Tensor
    full_codes: torch.Tensor
    full_scale: torch.Tensor
    full: torch.Tensor
    reduced: torch.Tensor


def _grids(module: nn.Module, quantizer: WeightQuant) -> list[_Grid]:
    """The layer's weight (below its quantizer) on the 8-bit grids its quantizer would use at full and at
    reduced range (per channel, or one grid for the whole tensor: shared weights), one entry per group."""
    weight = weight_below(module, quantizer)
    rows = {}
    for reduced in (False, True):
        grid = WeightQuant(weight, bits=8, reduced=reduced, per_tensor=quantizer.per_tensor)
        codes = grid.integers(weight)
        rows[reduced] = (
            _weight_rows(module, codes),
            _weight_rows(module, codes * grid.expanded_scale(weight)),
            grid.scale.chunk(getattr(module, "groups", 1)),
        )
    (full_codes, full, scales), (_, reduced, _) = rows[False], rows[True]
    floats = _weight_rows(module, weight)
    return [_Grid(*group) for group in zip(floats, full_codes, scales, full, reduced, strict=True)]


def replay(choice: RangeChoice, rows: torch.Tensor, grid: _Grid, act: ActQuant) -> None:
    """Add one batch of one layer's dequantized inputs `rows` [M, K] (one group) to `choice`."""
    codes = torch.clamp(torch.round(rows / act.scale) + act.zero_point, ACT_QMIN, ACT_QMAX)
    reference = rows @ grid.weight.T
    excess, count = overflow_excess(codes, grid.full_codes)
    full = rows @ grid.full.T + excess * act.scale * grid.full_scale
    choice.overflows += count
    choice.full_error += float(((full - reference) ** 2).sum())
    choice.reduced_error += float(((rows @ grid.reduced.T - reference) ** 2).sum())


def _rows(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The layer's input as rows of the reduction axis in MLAS order, one [M, K] tensor per group."""
    if isinstance(module, nn.Linear):
        return [x.reshape(-1, x.shape[-1])]
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)  # the conv's own padding, "same" too
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)  # [B, C, 1, L]: a 1 x k kernel
    two_d = isinstance(module, nn.Conv2d)
    kernel, dilation, stride = (
        tuple(getattr(module, attr)) if two_d else (1, *getattr(module, attr))
        for attr in ("kernel_size", "dilation", "stride")
    )
    patches = F.unfold(x, kernel, dilation=dilation, stride=stride)  # [B, C*kh*kw, L]
    groups, taps = module.groups, kernel[0] * kernel[1]
    per_group = patches.reshape(x.shape[0], groups, -1, taps, patches.shape[-1])  # [B, G, Cg, taps, L]
    ordered = per_group.permute(1, 0, 4, 3, 2)  # [G, B, L, taps, Cg]: channels innermost
    return [g.reshape(-1, taps * per_group.shape[2]) for g in ordered]


def _weight_rows(module: nn.Module, codes: torch.Tensor) -> list[torch.Tensor]:
    """A layer's weight (or its codes) as [N, K] per group, K in the order of `_rows`."""
    if isinstance(module, nn.Linear):
        return [codes]
    if codes.dim() == 3:
        codes = codes.unsqueeze(2)
    ordered = codes.permute(0, 2, 3, 1).reshape(codes.shape[0], -1)  # [out, kh*kw*Cg]
    return list(ordered.chunk(module.groups, dim=0))


def replay_layers(gm: fx.GraphModule, inputs: Iterable[torch.Tensor]) -> dict[str, RangeChoice]:
    """Replay every full-range 8-bit layer of `gm` on the calibration `inputs`. Layers whose input
    is not on an activation grid, and depthwise convolutions, are not replayed (see the module docstring)."""
    from edgeshrink.quant.prepare import weight_quantizers

    layers = {}
    for name, module, quantizer in weight_quantizers(gm):
        act = input_quantizer(gm, name)
        depthwise = isinstance(module, nn.Conv1d | nn.Conv2d) and 1 < module.groups == module.in_channels
        if quantizer.bits == 8 and not quantizer.reduced and act and not depthwise:
            layers[name] = (module, quantizer, act)
    choices = {name: RangeChoice() for name in layers}
    grids = {name: _grids(module, quantizer) for name, (module, quantizer, _) in layers.items()}
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: captured.__setitem__(name, args[0]))
        for name, (module, _, _) in layers.items()
    ]
    try:
        with torch.no_grad():
            for x in inputs:
                gm(x)
                for name, (module, _, act) in layers.items():
                    for rows, grid in zip(_rows(module, captured[name]), grids[name], strict=True):
                        replay(choices[name], rows, grid, act)
                captured.clear()
    finally:
        for hook in hooks:
            hook.remove()
    return choices


def reduce_overflowing_layers(gm: fx.GraphModule, inputs: Iterable[torch.Tensor]) -> dict[str, RangeChoice]:
    """Give -63..63 weights to the full-range 8-bit layers whose output is closer to the float one at -63..63
    than at full range with the overflows of the calibration `inputs`; returns the replay of every layer
    that overflowed (reduced or not)."""
    from edgeshrink.quant.prepare import refresh_weight_scales, weight_quantizers

    choices = {name: c for name, c in replay_layers(gm, inputs).items() if c.overflows}
    for name, _, quantizer in weight_quantizers(gm):
        if name in choices and choices[name].reduced:
            quantizer.reduced = True
    if any(c.reduced for c in choices.values()):
        refresh_weight_scales(gm)
    return choices
