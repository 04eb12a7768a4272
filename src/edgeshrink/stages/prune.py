"""Magnitude pruning (Han et al., NeurIPS 2015): remove small weights, retrain, repeat.

Two ways to say how much:
- method "threshold": a weight is pruned when |w| < quality x std(layer's weights). The standard
  deviation is taken once, over the layer's weights when the stage starts, so `quality` means the
  same thing in every round (the paper's "quality parameter").
- method "sparsity": remove a fraction of each layer (layerwise) or of all selected layers ranked
  together (global).
With `iterations` > 1 the amount grows over the rounds along `schedule` (cubic: the gradual schedule of
Zhu & Gupta 2017), with `finetune` epochs of retraining after each round (`final_epochs` after the
last one: recovering at the final sparsity is where longer training pays). Masks only ever shrink.
With `max_accuracy_drop`, the first round that loses more is undone, and `backoff_steps` bisections
between it and the last round within the budget (each fine-tuned and measured) find the highest amount
that holds: a compact net whose first round already costs too much still gets pruned.

Lottery tickets (Frankle & Carbin, ICLR 2019; Frankle et al., ICML 2020): with `rewind`, every round
resets the kept weights (and every other parameter and buffer) to the state the caller supplies as
`compress(rewind_weights=...)` (the weights at initialisation, `rewind = "init"`, or after training step
k, `rewind = k`) before its training, so each round trains the sparse network again from that point
instead of fine-tuning it. The `geometric` schedule removes the same fraction of the remaining weights in
every round (iterative magnitude pruning: 20% a round reaches 51%, 21%, 7% and 3.6% of the weights after
3, 7, 12 and 15 rounds).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from edgeshrink.artifact import Artifact, StageRecord
from edgeshrink.errors import ConfigError
from edgeshrink.example_inputs import InputShape
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import SpaceContext, StageConfig, StageContext, Suggest, register_stage, suggest_finetune
from edgeshrink.stages.prune_dead import Readers, find_readers, respend, unread_note, verified
from edgeshrink.stages.prune_sensitivity import sensitivity_sparsities
from edgeshrink.train import TrainConfig
from edgeshrink.weights import attach_mask, get_mask, rewind_to, top_magnitude_mask


class PruneConfig(StageConfig):
    type: Literal["prune"] = "prune"
    method: Literal["threshold", "sparsity"] = "threshold"
    quality: float = Field(1.0, gt=0, description="threshold method: prune |w| < quality x std(w)")
    sparsity: float = Field(0.9, ge=0, lt=1, description="sparsity method: fraction of weights removed")
    scheme: Literal["layerwise", "global", "sensitivity"] = "layerwise"
    per_layer: dict[str, float] = Field(default_factory=dict, description="selector -> quality or sparsity")
    sensitivity_drop: float = Field(
        1.0,
        gt=0,
        description="scheme sensitivity: points of validation accuracy pruning one layer alone, without "
        "retraining, may cost; each layer's sparsity is the highest (up to its sparsity setting) within it",
    )
    iterations: int = Field(1, ge=1)
    schedule: Literal["cubic", "linear", "constant", "geometric"] = "cubic"
    scope: Scope = Scope()
    finetune: TrainConfig = TrainConfig(epochs=2)
    final_epochs: int | None = Field(None, ge=0, description="epochs after the last round (default: finetune.epochs)")
    max_accuracy_drop: float | None = Field(
        None,
        ge=0,
        description="points of validation accuracy the stage may lose: rounds stop at the last one within it",
    )
    backoff_steps: int = Field(
        2, ge=0, description="with a budget: bisections between the last round within it and the one that was not"
    )
    dead_units: Literal["keep", "respend"] = Field(
        "keep",
        description="respend: prune the weights into units no later layer reads any more (every reader's "
        "weights on them pruned) and keep as many of the layer's next-largest weights instead",
    )
    rewind: Literal["init"] | int | None = Field(
        None,
        description="lottery tickets: reset the kept weights before each round's training to compress's "
        "rewind_weights (taken at initialisation, 'init', or after training step k)",
    )

    @model_validator(mode="after")
    def _check(self) -> PruneConfig:
        if self.method == "sparsity":
            for key, value in self.per_layer.items():
                if not 0 <= value < 1:
                    raise ValueError(
                        f"per_layer sparsity for {key!r} must be in [0, 1): {value} would remove "
                        "every weight of the layer"
                    )
        elif any(v <= 0 for v in self.per_layer.values()):
            raise ValueError("per_layer quality values must be > 0")
        if self.method == "threshold" and self.scheme in ("global", "sensitivity"):
            raise ValueError(f"scheme {self.scheme!r} applies to method 'sparsity' only")
        if self.method == "threshold" and self.schedule == "geometric":
            raise ValueError("schedule 'geometric' applies to method 'sparsity' only")
        if self.dead_units == "respend" and self.method != "sparsity":
            raise ValueError("dead_units 'respend' applies to method 'sparsity' only (it keeps each layer's count)")
        if isinstance(self.rewind, int) and self.rewind < 0:
            raise ValueError(f"rewind must be 'init' or a training step >= 0, got {self.rewind}")
        return self

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> PruneConfig:
        """One global sparsity (30-99%) or one per layer (0-99%, always keeping two weights), 1-3 rounds on
        the cubic schedule, and their fine-tuning."""
        per_layer = ctx.per_layer and len(ctx.layers) > 1
        scheme = trial.suggest_categorical(f"{prefix}.scheme", ["global", "layerwise"]) if per_layer else "global"
        iterations = trial.suggest_int(f"{prefix}.iterations", 1, 3)
        finetune = suggest_finetune(trial, f"{prefix}.finetune", ctx, (1e-4, 2e-3))
        common = {"method": "sparsity", "scheme": scheme, "iterations": iterations, "finetune": finetune}
        if scheme == "global":
            return cls(sparsity=round(trial.suggest_float(f"{prefix}.sparsity", 0.3, 0.99), 4), **common)
        amounts = {
            layer.name: round(trial.suggest_float(f"{prefix}.sparsity.{layer.name}", 0.0, _most(layer.weights)), 4)
            for layer in ctx.layers
        }
        return cls(per_layer=amounts, **common)


def _most(weights: int) -> float:
    """The highest sparsity a search tries on a layer of `weights` weights: 99%, keeping at least two."""
    return max(0.0, min(0.99, 1.0 - 2.0 / weights))


def progress(i: int, rounds: int, schedule: str) -> float:
    """Where round i (1-based) of `rounds` stands on the schedule, in [0, 1]: a constant schedule is at the
    end from its first round."""
    return 1.0 if schedule == "constant" else i / rounds


def round_amount(amount: float, t: float, schedule: str) -> float:
    """The sparsity (or threshold quality) to reach at progress `t` in [0, 1] of the schedule, for a final
    `amount`: cubic (Zhu & Gupta 2017), linear, or geometric (the same fraction of the remaining weights
    removed in every round: 1 - (1 - amount)^t). A constant schedule is at t = 1 in its rounds; a back-off
    bisection between its rounds scales the amount by t."""
    if schedule in ("constant", "linear"):
        return amount * t
    if schedule == "geometric":
        return 1.0 - (1.0 - amount) ** t
    return amount * (1.0 - (1.0 - t) ** 3)


def _global_masks(weights: dict[str, torch.Tensor], keep: float) -> tuple[dict[str, torch.Tensor], list[str]]:
    """One magnitude threshold over all layers keeping the `keep` fraction, and the layers it would empty: each
    of those keeps its own largest `keep` fraction instead (an emptied layer cuts the model's signal; on a
    small model one layer's weights can all sit below the others')."""
    flat = torch.cat([w.reshape(-1) for w in weights.values()])
    keep_all = top_magnitude_mask(flat, round(flat.numel() * keep))
    out, floored, start = {}, [], 0
    for name, w in weights.items():
        out[name] = keep_all[start : start + w.numel()].reshape(w.shape)
        start += w.numel()
        if not out[name].any():
            out[name] = top_magnitude_mask(w, max(1, round(w.numel() * keep)))
            floored.append(name)
    return out, floored


def _round_masks(
    layers: list[tuple[str, nn.Module]], cfg: PruneConfig, amount: dict[str, float], t: float, std0: dict[str, float]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Each layer's keep-mask at progress `t`, and the layers a global threshold would have emptied."""
    weights = {name: module.weight.detach().abs() for name, module in layers}
    if cfg.method == "threshold":
        masks = {name: w >= round_amount(amount[name], t, cfg.schedule) * std0[name] for name, w in weights.items()}
        return masks, []
    if cfg.scheme == "global":
        return _global_masks(weights, 1 - round_amount(cfg.sparsity, t, cfg.schedule))
    return {
        name: top_magnitude_mask(w, round(w.numel() * (1 - round_amount(amount[name], t, cfg.schedule))))
        for name, w in weights.items()
    }, []


def _respend_dead(model: nn.Module, layers, masks: dict[str, torch.Tensor], readers: list[Readers]) -> None:
    weights = {name: module.weight.detach() for name, module in layers}
    others = {r for g in readers for r, _, _ in g.reads if r not in masks}
    patterns = {name: model.get_submodule(name).weight.detach() != 0 for name in others}
    respend(masks, weights, readers, patterns)


def _prune_round(
    model, layers, cfg, amount, std0, i: int, ctx: StageContext, notes: list[str], t: float | None = None, readers=()
) -> list[dict]:
    """One round: masks for progress `t` of the schedule (default: round i's), weights into unread units
    respent (`readers`, with dead_units = "respend"), the rewind of a lottery ticket, then the round's
    training. A layer the global threshold would empty is noted in `notes`."""
    backoff = t is not None  # a bisection try: never the final round's longer training
    t = progress(i, cfg.iterations, cfg.schedule) if t is None else t
    with torch.no_grad():
        masks, floored = _round_masks(layers, cfg, amount, t, std0)
        for name in floored:
            note = f"the global threshold would remove every weight of {name}: it keeps its own largest weights"
            if note not in notes:
                notes.append(note)
        if readers:
            _respend_dead(model, layers, masks, list(readers))
        for name, module in layers:
            kept = attach_mask(module, "weight", masks[name])
            if not kept.any():
                raise ConfigError(
                    f"prune: round {i} removes every weight of layer {name!r}; lower its quality/sparsity"
                )
    if cfg.rewind is not None:
        rewind_to(model, ctx.rewind_weights or {})
    train_cfg = cfg.finetune
    if i == cfg.iterations and cfg.final_epochs is not None and not backoff:
        train_cfg = train_cfg.model_copy(update={"epochs": cfg.final_epochs})
    label = f"prune back-off {i}" if backoff else f"prune {i}/{cfg.iterations}"
    return [{"round": i, **h} for h in ctx.train(model, train_cfg, label)]


def _sparsity(layers: list[tuple[str, nn.Module]]) -> float:
    total = sum(m.weight.numel() for _, m in layers)
    return 1.0 - sum(int(m.weight.detach().count_nonzero()) for _, m in layers) / max(total, 1)


def _back_off(kept, bounds, cfg, amount, std0, ctx: StageContext, reference: float, notes: list[str], readers):
    """Bisect the schedule's progress between `bounds` (within the budget, over it), each try pruned from
    the model kept so far and fine-tuned; returns the model at the highest progress within the budget."""
    low, high = bounds
    history: list[dict] = []
    for step in range(1, cfg.backoff_steps + 1):
        t = (low + high) / 2
        trial = copy.deepcopy(kept)
        layers = select_layers(trial, cfg.scope, "prune")
        rounds = _prune_round(trial, layers, cfg, amount, std0, step, ctx, notes, t, readers)  # readers name layers
        history += [{"backoff": step, **h} for h in rounds]
        accuracy = ctx.accuracy(trial)
        within = reference - accuracy <= cfg.max_accuracy_drop  # type: ignore[operator]
        verdict = "kept" if within else "undone"
        notes.append(
            f"back-off {step}/{cfg.backoff_steps}: {100 * _sparsity(layers):.1f}% sparse, "
            f"{accuracy:.2f}% (drop {reference - accuracy:.2f}): {verdict}"
        )
        ctx.progress.line(f"[prune] {notes[-1]}")
        kept, low, high = (trial, t, high) if within else (kept, low, t)
    return kept, history


def _probe_inputs(ctx: StageContext) -> torch.Tensor:
    """Eight inputs to check dead units on: random ones for a floating-point input; for integer inputs (token
    ids, where a random value need not be a valid id) the first training inputs."""
    example = ctx.example_input
    if example.dtype.is_floating_point:
        return torch.randn((8, *example.shape[1:]), generator=torch.Generator().manual_seed(0), dtype=example.dtype)
    first = ctx.batches(1) if ctx.batches is not None else []
    return first[0][0][:8] if first else example


def _readers(model: nn.Module, layers, cfg: PruneConfig, ctx: StageContext, notes: list[str]) -> list[Readers]:
    """The unit groups whose dead units a round may respend (checked on a random probe batch)."""
    if cfg.dead_units != "respend":
        return []
    if ctx.example_input is None:
        raise ConfigError("prune: dead_units 'respend' traces the model and needs an example input")
    shape = InputShape.of(ctx.example_input)
    probe = _probe_inputs(ctx)
    try:
        found = find_readers(model, layers, shape)
    except Exception as exc:  # noqa: BLE001 - the pruning goes on, with every unit kept as it is
        cause = exc.__cause__ or exc
        notes.append(f"dead units: torch-pruning cannot trace this model ({type(cause).__name__}); none respent")
        return []
    readers, more = verified(model, found, probe)
    notes += more
    return readers


@register_stage(PruneConfig)
def prune(artifact: Artifact, cfg: PruneConfig, ctx: StageContext) -> Artifact:
    model = artifact.model
    layers = select_layers(model, cfg.scope, "prune")
    default = cfg.quality if cfg.method == "threshold" else cfg.sparsity
    amount = per_layer(model, layers, cfg.per_layer, default, "prune")
    std0 = {name: float(module.weight.detach().std()) for name, module in layers}
    notes: list[str] = []
    if cfg.scheme == "sensitivity":
        amount = sensitivity_sparsities(model, layers, amount, cfg.sensitivity_drop, ctx, notes)
    reference = ctx.start_accuracy  # set by apply_stage when the stage has a budget and validation data
    readers = _readers(model, layers, cfg, ctx, notes)
    history: list[dict] = []
    for i in range(1, cfg.iterations + 1):
        before = copy.deepcopy(model) if reference is not None else None
        history += _prune_round(model, layers, cfg, amount, std0, i, ctx, notes, readers=readers)
        if reference is None:
            continue
        accuracy = ctx.accuracy(model)
        drop = reference - accuracy
        if drop > cfg.max_accuracy_drop:  # back to the last round within the budget, bisect, and stop
            notes.append(
                f"accuracy budget {cfg.max_accuracy_drop:g} points: round {i} of {cfg.iterations} lost {drop:.2f} "
                f"({reference:.2f}% -> {accuracy:.2f}%, {100 * _sparsity(layers):.1f}% sparse); back to "
                + (f"round {i - 1}" if i > 1 else "the unpruned weights")
            )
            bounds = (
                progress(i - 1, cfg.iterations, cfg.schedule) if i > 1 else 0.0,
                progress(i, cfg.iterations, cfg.schedule),
            )
            model, more = _back_off(before, bounds, cfg, amount, std0, ctx, reference, notes, readers)
            history += more
            layers = select_layers(model, cfg.scope, "prune")
            notes.append(f"sparsity reached: {100 * _sparsity(layers):.1f}% of the selected weights (planned more)")
            break
    dead = unread_note(model, readers)
    notes += [dead] if dead else []
    rows = []
    for name, module in layers:
        mask = get_mask(module, "weight")
        kept = int(mask.sum()) if mask is not None else module.weight.numel()
        rows.append(
            {
                "layer": name,
                "weights": module.weight.numel(),
                "kept": kept,
                "kept_percent": 100.0 * kept / module.weight.numel(),
                "setting": amount[name],
                "threshold": amount[name] * std0[name] if cfg.method == "threshold" else None,
            }
        )
    record = StageRecord(
        stage="prune",
        config=cfg.model_dump(mode="json"),
        layers=rows,
        accuracy=ctx.accuracy(model),
        history=history,
        notes=notes,
    )
    return artifact.with_record(record, model=model)
