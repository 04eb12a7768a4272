"""Post-training quantization in one call: place the quantizers, calibrate them, correct the biases (and
put them on the grid the integer kernels add them on).

The `quantize` stage builds on it (mixed precision, QAT); exporters use it to quantize a float model
when asked for an integer file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from edgeshrink.quant.attention import traceable
from edgeshrink.quant.bias_grid import snap_biases
from edgeshrink.quant.calibrate import Method
from edgeshrink.quant.passes import batch_inputs, calibrate, correct_bias
from edgeshrink.quant.prepare import QUANTIZABLE, QuantPlan, prepare
from edgeshrink.quant.recurrent import RECURRENT_BITS
from edgeshrink.quant.rounding import gptq_round
from edgeshrink.quant.saturation import reduce_overflowing_layers

Batches = Iterable[tuple[torch.Tensor, object]]


@dataclass(frozen=True)
class PTQSettings:
    """How the quantizers are placed and calibrated (the `quantize` stage's settings that PTQ uses)."""

    group_size: int = 0
    learn_scales: bool = False
    reduced_range: bool = False  # every 8-bit layer's weights in -63..63
    reduce_overflowing: bool = False  # only the layers whose calibration inputs overflow (quant/saturation.py)
    calibration: Method = "mse"
    percentile: float = 99.99
    calibration_batches: int = 16
    bias_correction: bool = True
    split_hardswish: bool = True  # hardswish as x * hardsigmoid(x), the product on integer kernels
    slices_keep_grid: bool = True  # a slice of a quantized tensor stays on its grid (LiteRT's STRIDED_SLICE)
    # gptq: codes chosen for the layer's output; gptq-float: for the float model's output (quant/rounding.py)
    rounding: Literal["nearest", "gptq", "gptq-float"] = "nearest"
    recurrent_weights: Literal["int8", "float"] = "int8"  # GRU/LSTM weights stored as codes (quant/recurrent.py)


def build_quantized(
    model: nn.Module, bits: dict[str, int], batches: Batches, settings: PTQSettings
) -> tuple[nn.Module, QuantPlan]:
    """A calibrated fake-quantized copy of `model` with `bits[layer]`-bit weights (other layers float)."""
    quantized, plan = prepare(
        model,
        bits,
        group_size=settings.group_size,
        learn_scales=settings.learn_scales,
        reduced_range=settings.reduced_range,
        split_hardswish=settings.split_hardswish,
        slices_keep_grid=settings.slices_keep_grid,
        recurrent_bits=RECURRENT_BITS if settings.recurrent_weights == "int8" else None,
    )
    calibrate(
        quantized,
        batches,
        method=settings.calibration,
        percentile=settings.percentile,
        num_batches=settings.calibration_batches,
    )
    if settings.reduce_overflowing and not settings.reduced_range:
        plan.overflowing = reduce_overflowing_layers(quantized, batch_inputs(batches, settings.calibration_batches))
        for row in plan.layers:
            if row.name in plan.overflowing and plan.overflowing[row.name].reduced:
                row.granularity = f"{row.granularity}, range -63..63 (full range overflows 16-bit pair sums)"
    if settings.rounding != "nearest":
        plan.gptq_rounded = gptq_round(
            quantized,
            batches,
            settings.calibration_batches,
            settings.bias_correction,
            float_targets=settings.rounding == "gptq-float",
        )
    if settings.bias_correction:  # the layers GPTQ rounded are corrected already: their shift here is 0
        correct_bias(quantized, batches, num_batches=max(1, settings.calibration_batches // 2))
    snap_biases(quantized)
    return quantized.eval(), plan


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the layers that ONNX Runtime and LiteRT run on integer kernels."""
    return [name for name, module in model.named_modules() if isinstance(module, QUANTIZABLE)]


def post_training_quantize(
    model: nn.Module, batches: Batches, weight_bits: int = 8, settings: PTQSettings | None = None
) -> tuple[nn.Module, QuantPlan]:
    """Every quantizable layer at `weight_bits`, calibrated on `batches` ((inputs, labels) pairs)."""
    model, _, _ = traceable(model)  # attention as plain layers, when it traces
    bits = dict.fromkeys(quantizable_layers(model), weight_bits)
    return build_quantized(model, bits, list(batches), settings or PTQSettings())
