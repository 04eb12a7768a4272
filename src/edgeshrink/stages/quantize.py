"""The `quantize` stage: integer weights and activations (PTQ, or QAT with fine-tuning).

It replaces the model by a fake-quantized copy (quant/prepare.py), calibrates the activation ranges,
optionally corrects the biases, keeps the most sensitive layers in higher precision until an accuracy
budget holds, and fine-tunes through the rounding when `finetune.epochs` is above zero (QAT). Masks and
codebooks of earlier stages stay under the weight quantizers. The artifact it returns records which
layers got how many bits (`Quantization`), what `io.load` needs to rebuild the model from integer codes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from edgeshrink.artifact import Artifact, Quantization, StageRecord
from edgeshrink.errors import ConfigError
from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.attention import traceable
from edgeshrink.quant.bias_grid import snap_biases
from edgeshrink.quant.calibrate import Method
from edgeshrink.quant.passes import layer_sensitivity
from edgeshrink.quant.prepare import (
    QuantPlan,
    activation_quantizers,
    per_tensor_layers,
    quantization_bits,
    refresh_weight_scales,
)
from edgeshrink.quant.ptq import PTQSettings, build_quantized
from edgeshrink.quant.recurrent import recurrent_note
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import SpaceContext, StageConfig, StageContext, Suggest, register_stage, suggest_finetune
from edgeshrink.train import TrainConfig


class QuantizeConfig(StageConfig):
    type: Literal["quantize"] = "quantize"
    weight_bits: int = Field(8, ge=2, le=8, description="bits of the integer weights (8, or 2..7 sub-byte)")
    per_layer: dict[str, int] = Field(default_factory=dict, description="selector -> weight bits (0: keep float)")
    group_size: int = Field(
        0, ge=0, description="sub-byte weights: one scale per this many input channels (0: per channel)"
    )
    weight_range: Literal["auto", "full", "reduced", "per-layer"] = Field(
        "auto",
        description="8-bit weights in -127..127 (full), -63..63 (reduced: no 16-bit saturation on x86 without VNNI), "
        "or -63..63 only where calibration inputs overflow those 16 bits (per-layer; auto: per-layer on x86 "
        "without VNNI, else full)",
    )
    calibration: Method = "percentile"
    percentile: float = Field(99.99, gt=50, le=100)
    calibration_batches: int = Field(16, ge=1)
    bias_correction: bool = True
    rounding: Literal["nearest", "gptq", "gptq-float"] = Field(
        "nearest",
        description="weight codes: nearest grid point, or chosen by GPTQ for the layer's output error on its "
        "quantized inputs (gptq) or for the float model's output (gptq-float: also absorbs earlier layers' errors)",
    )
    recurrent_weights: Literal["int8", "float"] = Field(
        "int8", description="GRU/LSTM/RNN (float compute): weights stored as int8 codes per row, or kept float"
    )
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

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> QuantizeConfig:
        """4- or 8-bit weights, the calibration method, bias correction, the weight rounding, and 0 (PTQ)
        or more epochs of quantization-aware training."""
        return cls(
            weight_bits=int(trial.suggest_categorical(f"{prefix}.weight_bits", [4, 8])),
            calibration=trial.suggest_categorical(f"{prefix}.calibration", ["mse", "percentile", "minmax"]),
            bias_correction=trial.suggest_categorical(f"{prefix}.bias_correction", [True, False]),
            rounding=trial.suggest_categorical(f"{prefix}.rounding", ["nearest", "gptq", "gptq-float"]),
            finetune=suggest_finetune(trial, f"{prefix}.finetune", ctx, (1e-5, 1e-3), min_epochs=0),
        )

    def resolved_range(self) -> str:
        """The weight range on this machine: `auto` is `per-layer` where int8 kernels saturate, else `full`."""
        if self.weight_range == "auto":
            return "per-layer" if int8_weights_saturate() else "full"
        return self.weight_range

    def settings(self) -> PTQSettings:
        return PTQSettings(
            group_size=self.group_size,
            learn_scales=self.learn_scales,
            reduced_range=self.resolved_range() == "reduced",
            reduce_overflowing=self.resolved_range() == "per-layer",
            calibration=self.calibration,
            percentile=self.percentile,
            calibration_batches=self.calibration_batches,
            bias_correction=self.bias_correction,
            rounding=self.rounding,
            recurrent_weights=self.recurrent_weights,
        )


Build = Callable[[dict[str, int]], tuple[nn.Module, QuantPlan]]


def _mixed_precision(
    build: Build, bits: dict[str, int], cfg: QuantizeConfig, ctx: StageContext, reference: float, notes: list[str]
) -> tuple[dict[str, int], dict[str, float], tuple[nn.Module, QuantPlan] | None]:
    """With a budget, first every selected layer at its bits: when that holds, no sensitivity is measured.
    Otherwise (or when `sensitivity` is asked for) measure each layer's drop alone, then raise the most
    sensitive layers (sub-byte -> 8 bits -> float) until the drop is within the budget. Returns the final
    bits, the sensitivities and the calibrated model of the final bits (not built a second time)."""
    built, drop = None, 0.0
    if cfg.max_accuracy_drop is not None and not cfg.sensitivity:
        built = build(bits)
        drop = reference - ctx.accuracy(built[0])
        if drop <= cfg.max_accuracy_drop:
            notes.append(f"accuracy budget {cfg.max_accuracy_drop:g} points: every layer quantized (drop {drop:.2f})")
            return bits, {}, built
    sensitivity = layer_sensitivity(
        lambda only: build({n: b for n, b in bits.items() if n in only})[0], list(bits), ctx.evaluate, reference
    )
    if cfg.max_accuracy_drop is None:
        return bits, sensitivity, None
    order = sorted(sensitivity, key=sensitivity.get, reverse=True)
    bits = dict(bits)
    while True:
        if built is None:  # the all-layers build of the first check is already measured
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
        built = None
        notes.append(f"mixed precision: {victim} raised to {bits.get(victim, 'float')} (drop {drop:.2f})")


def _qat_within_budget(
    build: Build, bits: dict[str, int], cfg: QuantizeConfig, ctx: StageContext, reference: float, notes: list[str]
) -> tuple[nn.Module, QuantPlan, list[dict]] | None:
    """QAT with a budget is judged after fine-tuning (it recovers what PTQ lost): every layer quantized
    and trained; None when that misses the budget, so that mixed precision decides before training again."""
    quantized, plan = build(bits)
    history = ctx.train(quantized, cfg.finetune, "quantize (QAT)")
    drop = reference - ctx.accuracy(quantized)
    if drop <= cfg.max_accuracy_drop:  # type: ignore[operator]
        notes.append(
            f"accuracy budget {cfg.max_accuracy_drop:g} points: every layer quantized after QAT (drop {drop:.2f})"
        )
        return quantized, plan, history
    notes.append(f"after QAT with every layer quantized the drop is {drop:.2f}: mixed precision, then QAT again")
    return None


def _plan_rows(plan: QuantPlan, chosen: dict[str, int], sensitivity: dict[str, float]) -> list[dict]:
    rows = []
    for layer in plan.layers:
        row = layer.to_dict()
        if layer.name in sensitivity:
            row["sensitivity_drop"] = sensitivity[layer.name]
        asked = chosen.get(layer.name)
        if layer.status == "float" and asked and layer.reason == "kept in float (not selected)":
            row["reason"] = "kept in float: accuracy budget"
        elif layer.status == "float" and asked == 0:
            row["reason"] = "kept in float: per_layer setting 0"
        rows.append(row)
    return rows


def _refuse_requantizing(artifact: Artifact) -> None:
    if artifact.quantization is not None:
        raise ConfigError("quantize: the model is already quantized; a recipe may quantize once")
    if artifact.precision != "float32":
        raise ConfigError("quantize needs a float32 model: put the quantize stage before half, or drop half")


def _choose_bits(
    build: Build, bits: dict[str, int], cfg: QuantizeConfig, ctx: StageContext, model: nn.Module, notes: list[str]
) -> tuple[nn.Module, QuantPlan, list[dict], dict[str, float]]:
    """The quantized model (calibrated, fine-tuned when QAT), its plan, the training history and the
    per-layer sensitivities, with the bits the accuracy budget allows."""
    if cfg.max_accuracy_drop is None and not cfg.sensitivity:
        quantized, plan = build(bits)
        return quantized, plan, ctx.train(quantized, cfg.finetune, "quantize (QAT)"), {}
    if ctx.evaluate is None:
        raise ConfigError("quantize: sensitivity / max_accuracy_drop needs validation data (val_loader= or eval_fn=)")
    reference = ctx.start_accuracy if ctx.start_accuracy is not None else ctx.accuracy(model)
    if cfg.finetune.epochs > 0 and cfg.max_accuracy_drop is not None and not cfg.sensitivity:
        trained = _qat_within_budget(build, bits, cfg, ctx, reference, notes)
        if trained is not None:
            return (*trained, {})
    bits, sensitivity, built = _mixed_precision(build, bits, cfg, ctx, reference, notes)
    quantized, plan = built or build(bits)
    return quantized, plan, ctx.train(quantized, cfg.finetune, "quantize (QAT)"), sensitivity


def _rounding_note(plan: QuantPlan, rounding: str) -> str:
    """Which layers GPTQ rounded (and for what), and which kept nearest rounding."""
    layers = [p.name for p in plan.layers if p.status == "quantized"]
    nearest = [n for n in layers if n not in plan.gptq_rounded]
    recurrent = [n for n in plan.gptq_rounded if n not in layers]  # 'gru.weight_ih_l0': float compute
    aim = "the float model's output" if rounding == "gptq-float" else "each layer's output"
    note = f"weights rounded by GPTQ for {aim}: {len(layers) - len(nearest)} of {len(layers)} layers"
    if recurrent:
        note += f", and the input weights of {', '.join(recurrent)}"
    return note + (
        f"; nearest rounding kept (a shared codebook, a conv F.unfold cannot express, or a singular "
        f"input Hessian): {', '.join(nearest)}"
        if nearest
        else ""
    )


@register_stage(QuantizeConfig)
def quantize(artifact: Artifact, cfg: QuantizeConfig, ctx: StageContext) -> Artifact:
    _refuse_requantizing(artifact)
    if ctx.calibration is None:
        raise ConfigError(
            "quantize needs calibration data: pass train_loader= (or val_loader=) to compress, "
            "or calibration_loader= when you train with train_fn="
        )
    model, rewritten, kept_float = traceable(artifact.model)  # attention as plain layers, when it traces
    chosen = per_layer(model, select_layers(model, cfg.scope, "quantize"), cfg.per_layer, cfg.weight_bits, "quantize")
    bits = {name: b for name, b in chosen.items() if b > 0}
    settings = cfg.settings()

    def build(layer_bits: dict[str, int]) -> tuple[nn.Module, QuantPlan]:
        return build_quantized(model, layer_bits, ctx.calibration, settings)  # type: ignore[arg-type]

    notes: list[str] = [kept_float] if kept_float else []
    if rewritten:
        notes.append(f"attention decomposed into q/k/v/out Linear layers: {', '.join(rewritten)}")
    quantized, plan, history, sensitivity = _choose_bits(build, bits, cfg, ctx, model, notes)
    for _, quantizer in activation_quantizers(quantized):
        quantizer.freeze()
    refresh_weight_scales(quantized)
    quantized.eval()
    snapped = snap_biases(quantized)  # again: QAT moved the biases and the scales
    if snapped:
        notes.append(
            f"biases of {len(snapped)} layers on their int32 grid (input scale x weight scale), as the integer "
            "kernels add them"
        )
    notes.extend(_range_notes(settings, plan))
    if settings.rounding != "nearest":
        notes.append(_rounding_note(plan, settings.rounding))
    if plan.recurrent:
        notes.append(recurrent_note(plan.recurrent))
    if plan.folded_batchnorms:
        notes.append(f"folded BatchNorm into the preceding conv: {', '.join(plan.folded_batchnorms)}")
    record = StageRecord(
        stage="quantize",
        config=cfg.model_dump(mode="json"),
        layers=_plan_rows(plan, chosen, sensitivity),
        accuracy=ctx.accuracy(quantized),
        history=history,
        notes=notes + [f"{len(plan.activations)} activation quantizers ({cfg.calibration} calibration)"],
    )
    quantized_bits = {p.name: int(p.weight_bits) for p in plan.layers if p.status == "quantized" and p.weight_bits}
    quantization = Quantization(
        bits=quantized_bits,
        group_size=cfg.group_size,
        reduced_range=settings.reduced_range,
        reduced_layers=[] if settings.reduced_range else quantization_bits(quantized)[2],
        per_tensor=per_tensor_layers(quantized),
        rewritten=rewritten,
        split_hardswish=plan.split_hardswish > 0,
        sliced=plan.sliced > 0,
        recurrent=plan.recurrent,
    )
    return artifact.with_record(record, model=quantized, quantization=quantization)


def _range_notes(settings: PTQSettings, plan: QuantPlan) -> list[str]:
    """What the report says about the 8-bit weights' range (quant/saturation.py)."""
    if settings.reduced_range:
        return [
            "8-bit weights use -63..63: ONNX Runtime's int8 kernels on x86 without VNNI add pairs of products "
            'in 16 bits, which full-range weights can overflow (weight_range = "per-layer" reduces only where needed)'
        ]
    if not settings.reduce_overflowing:
        return []
    reduced = [name for name, choice in plan.overflowing.items() if choice.reduced]
    kept = [name for name in plan.overflowing if name not in reduced]
    notes = ["8-bit weights use -127..127" + (f" except -63..63 on {', '.join(reduced)}" if reduced else "")]
    if plan.overflowing:
        notes.append(
            "ONNX Runtime's int8 kernels on x86 without VNNI add pairs of products in 16 bits: replayed on the "
            f"calibration data, {len(plan.overflowing)} layer(s) overflow at full range; -63..63 where that gives "
            f"the smaller output error against the float weights ({len(reduced)}), full range elsewhere "
            f"({len(kept)}{': ' + ', '.join(kept) if kept else ''})"
        )
    return notes
