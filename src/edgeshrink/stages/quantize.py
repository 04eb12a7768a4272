"""Quantization stages: `quantize` (integer weights and activations: PTQ, or QAT with fine-tuning)
and `half` (float16 weights and activations).

`quantize` replaces the model by a fake-quantized copy (see quant/prepare.py), calibrates the
activation ranges, optionally corrects the biases, keeps the most sensitive layers in higher
precision until an accuracy budget holds, and fine-tunes through the rounding when `finetune.epochs`
is above zero (QAT). Masks and codebooks of earlier stages stay under the weight quantizers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.quant.calibrate import Method
from edgeshrink.quant.passes import calibrate, correct_bias, layer_sensitivity
from edgeshrink.quant.prepare import QuantPlan, activation_quantizers, prepare
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import StageConfig, StageContext, StageRecord, register_stage
from edgeshrink.train import TrainConfig
from edgeshrink.weights import baked_copy


class QuantizeConfig(StageConfig):
    type: Literal["quantize"] = "quantize"
    weight_bits: int = Field(8, ge=2, le=8, description="bits of the integer weights (8, or 2..7 sub-byte)")
    per_layer: dict[str, int] = Field(default_factory=dict, description="selector -> weight bits (0: keep float)")
    group_size: int = Field(
        0, ge=0, description="sub-byte weights: one scale per this many input channels (0: per channel)"
    )
    weight_range: Literal["auto", "full", "reduced"] = Field(
        "auto",
        description="8-bit weights in -127..127 (full) or -63..63 (reduced: no 16-bit saturation on x86 without VNNI)",
    )
    calibration: Method = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)
    calibration_batches: int = Field(16, ge=1)
    bias_correction: bool = True
    learn_scales: bool = Field(False, description="QAT: learn activation scales (LSQ)")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        description="mixed precision: keep the most sensitive layers in higher precision until the drop holds",
    )
    sensitivity: bool = Field(
        False, description="measure each layer's accuracy drop alone (implied by max_accuracy_drop)"
    )
    scope: Scope = Scope()
    finetune: TrainConfig = TrainConfig(epochs=0, optimizer="adam", lr=1e-5)

    @field_validator("per_layer")
    @classmethod
    def _bits_range(cls, value: dict[str, int]) -> dict[str, int]:
        for key, bits in value.items():
            if bits != 0 and not 2 <= bits <= 8:
                raise ValueError(f"bits for {key!r} must be 0 (float) or 2..8, got {bits}")
        return value


def _calibration_batches(ctx: StageContext):
    batches = ctx.extras.get("calibration")
    if batches is None:
        raise ConfigError(
            "quantize needs calibration data: pass train_loader= (or val_loader=) to compress, "
            "or calibration_loader= when you train with train_fn="
        )
    return batches


def reduced_range(cfg: QuantizeConfig) -> bool:
    if cfg.weight_range == "auto":
        from edgeshrink.exporters.runtime import int8_weights_saturate

        return int8_weights_saturate()
    return cfg.weight_range == "reduced"


def _builder(
    model: nn.Module, cfg: QuantizeConfig, batches, reduced: bool
) -> Callable[[dict[str, int]], tuple[nn.Module, QuantPlan]]:
    def build(bits: dict[str, int]) -> tuple[nn.Module, QuantPlan]:
        quantized, plan = prepare(
            model, bits, group_size=cfg.group_size, learn_scales=cfg.learn_scales, reduced_range=reduced
        )
        calibrate(
            quantized, batches, method=cfg.calibration, percentile=cfg.percentile, num_batches=cfg.calibration_batches
        )
        if cfg.bias_correction:
            correct_bias(quantized, batches, num_batches=max(1, cfg.calibration_batches // 2))
        return quantized, plan

    return build


def _mixed_precision(
    build, bits: dict[str, int], cfg: QuantizeConfig, ctx: StageContext, reference: float, notes: list[str]
) -> tuple[dict[str, int], dict[str, float], tuple[nn.Module, QuantPlan] | None]:
    """Measure each layer's sensitivity, then raise the most sensitive layers (sub-byte -> 8 bits ->
    float) until the accuracy drop is within the budget. With a budget, also returns the calibrated
    model of the final bits, so that it is not built a second time."""
    sensitivity = layer_sensitivity(
        lambda only: build({n: b for n, b in bits.items() if n in only})[0], list(bits), ctx.evaluate, reference
    )
    if cfg.max_accuracy_drop is None:
        return bits, sensitivity, None
    order = sorted(sensitivity, key=sensitivity.get, reverse=True)
    bits = dict(bits)
    while True:
        built = build(bits)
        drop = reference - ctx.accuracy(built[0])
        ctx.progress.line(f"[quantize] {len(bits)} layer(s) quantized: accuracy drop {drop:.2f} points")
        if drop <= cfg.max_accuracy_drop or not bits:
            notes.append(f"mixed precision: drop {drop:.2f} <= budget {cfg.max_accuracy_drop} points")
            return bits, sensitivity, built
        victim = next((n for n in order if n in bits), None)
        if victim is None:
            return bits, sensitivity, built
        if bits[victim] < 8:
            bits[victim] = 8
        else:
            del bits[victim]
        notes.append(f"mixed precision: {victim} raised to {bits.get(victim, 'float')} (drop {drop:.2f})")


def post_training_quantize(model: nn.Module, batches, cfg: QuantizeConfig | None = None) -> tuple[nn.Module, QuantPlan]:
    """Calibrated fake-quantized copy of `model` with every quantizable layer at `cfg.weight_bits` (what an
    exporter does to a float model when asked for an integer file). `batches` yields (inputs, labels)."""
    cfg = cfg or QuantizeConfig()
    chosen = per_layer(model, select_layers(model, cfg.scope, "quantize"), cfg.per_layer, cfg.weight_bits, "quantize")
    quantized, plan = _builder(model, cfg, batches, reduced_range(cfg))({n: b for n, b in chosen.items() if b > 0})
    return quantized.eval(), plan


@register_stage(QuantizeConfig)
def quantize(model: nn.Module, cfg: QuantizeConfig, ctx: StageContext) -> StageRecord:
    batches = _calibration_batches(ctx)
    layers = select_layers(model, cfg.scope, "quantize")
    chosen = per_layer(model, layers, cfg.per_layer, cfg.weight_bits, "quantize")
    bits = {name: b for name, b in chosen.items() if b > 0}
    reduced = reduced_range(cfg)
    build = _builder(model, cfg, batches, reduced)
    notes: list[str] = []
    sensitivity: dict[str, float] = {}
    built = None
    if cfg.max_accuracy_drop is not None or cfg.sensitivity:
        if ctx.evaluate is None:
            raise ConfigError(
                "quantize: sensitivity / max_accuracy_drop needs validation data (val_loader= or eval_fn=)"
            )
        reference = ctx.accuracy(model)
        bits, sensitivity, built = _mixed_precision(build, bits, cfg, ctx, reference, notes)
    quantized, plan = built or build(bits)
    history = ctx.train(quantized, cfg.finetune, "quantize (QAT)")
    for _, quantizer in activation_quantizers(quantized):
        quantizer.freeze()
    rows = []
    for layer in plan.layers:
        row = layer.to_dict()
        if layer.name in sensitivity:
            row["sensitivity_drop"] = sensitivity[layer.name]
        if (
            layer.status == "float"
            and layer.name in chosen
            and chosen[layer.name] > 0
            and not layer.reason.startswith("unsupported")
        ):
            row["reason"] = "kept in float: accuracy budget"
        elif layer.status == "float" and layer.name in chosen and chosen[layer.name] == 0:
            row["reason"] = "kept in float: per_layer setting 0"
        rows.append(row)
    ctx.extras["replace_model"] = quantized
    ctx.extras.setdefault("meta", {})
    ctx.extras["meta"] = {
        **(ctx.extras["meta"] or {}),
        "quantization": {
            "bits": bits,
            "group_size": cfg.group_size,
            "reduced_range": reduced,
            "activations": "uint8 grid, per tensor",
        },
    }
    if reduced:
        notes.append(
            "8-bit weights use -63..63: this x86 CPU has no VNNI, and ONNX Runtime's int8 kernels saturate "
            'at 16 bits with full-range weights (set weight_range = "full" for a VNNI or ARM target)'
        )
    if plan.folded_batchnorms:
        notes.append(f"folded BatchNorm into the preceding conv: {', '.join(plan.folded_batchnorms)}")
    return StageRecord(
        stage="quantize",
        config=cfg.model_dump(mode="json"),
        layers=rows,
        accuracy=ctx.accuracy(quantized),
        history=history,
        notes=notes + [f"{len(plan.activations)} activation quantizers ({cfg.calibration} calibration)"],
    )


class HalfConfig(StageConfig):
    type: Literal["half"] = "half"
    finetune: TrainConfig = TrainConfig(epochs=0)


class HalfPrecision(nn.Module):
    """Runs the wrapped model in float16 and hands float32 in and out, so callers feed the same data."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


@register_stage(HalfConfig)
def half(model: nn.Module, cfg: HalfConfig, ctx: StageContext) -> StageRecord:
    wrapped = HalfPrecision(baked_copy(model)).eval()
    ctx.extras["replace_model"] = wrapped
    ctx.extras["meta"] = {**(ctx.extras.get("meta") or {}), "precision": "float16"}
    return StageRecord(
        stage="half",
        config=cfg.model_dump(mode="json"),
        accuracy=ctx.accuracy(wrapped),
        notes=["weights and activations in float16; inputs and outputs stay float32"],
    )
