"""Structured pruning: remove whole channels, so the model becomes physically smaller and faster.

Channels are removed in coupled groups on torch-pruning's dependency graph (`channel_groups.py`), so
residual additions, depthwise and grouped convolutions and concatenations stay consistent. How many
each group loses:
- mode "uniform": `ratio` of every group's channels (per-layer overrides in `per_layer`);
- mode "sensitivity": each group is pruned alone at `sensitivity_ratios` and its accuracy drop
  measured on a few training batches; a group gets the largest ratio whose drop stays within
  `accuracy_budget` points (Li et al. 2017, "Pruning Filters for Efficient ConvNets").
With `target_macs_reduction` the amount is searched instead: one ratio for all groups (uniform), or
the smallest accuracy budget (sensitivity) that removes that fraction of the MACs. With `steps` > 1
the amount grows linearly over the steps with `finetune` epochs after each (`final_epochs` after the
last). Every removal is recorded as data (`StageRecord.edits`, and the run's `arch`), so the pruned
model can be rebuilt from a file without pickles (`architecture.py`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from edgeshrink.architecture import dependency_graph, edits_from_history
from edgeshrink.artifact import Artifact, StageRecord
from edgeshrink.errors import ConfigError, ScopeError
from edgeshrink.example_inputs import InputShape
from edgeshrink.hardware import channel_block
from edgeshrink.mac_count import count_macs
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import SpaceContext, StageConfig, StageContext, Suggest, register_stage, suggest_finetune
from edgeshrink.stages.channel_groups import (
    ChannelGroup,
    MacEstimator,
    classifier_name,
    find_groups,
    fixed_width_layers,
    keep_count,
    pruned_copy,
    remove_channels,
    require_runs,
    score_groups,
)
from edgeshrink.train import TrainConfig, evaluate
from edgeshrink.weights import has_parametrizations, prunable_weights


class ChannelsConfig(StageConfig):
    type: Literal["channels"] = "channels"
    criterion: Literal["l1", "bn_scale", "taylor"] = "l1"
    mode: Literal["uniform", "sensitivity"] = "uniform"
    ratio: float = Field(0.3, description="uniform: fraction of every group's channels removed")
    per_layer: dict[str, float] = Field(default_factory=dict, description="selector -> ratio of that layer's group")
    target_macs_reduction: float | None = Field(None, description="search the amount that removes this MAC fraction")
    accuracy_budget: float = Field(1.0, ge=0, description="sensitivity: accuracy points one group may cost")
    sensitivity_ratios: list[float] = Field([0.2, 0.4, 0.6, 0.8], min_length=1)
    max_ratio: float = Field(0.8, description="no searched or sensitivity ratio goes above this")
    round_to: int | Literal["auto"] = Field(
        "auto",
        description="keep channel counts a multiple of this; auto: the block of ONNX Runtime's CPU kernels here "
        "(16 on AVX-512, 8 on AVX2, 4 elsewhere)",
    )
    steps: int = Field(1, ge=1)
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="points of validation accuracy the stage may lose: a step over it is undone"
    )
    calibration_batches: int = Field(4, ge=1, description="training batches for taylor and sensitivity")
    scope: Scope = Scope()
    finetune: TrainConfig = TrainConfig(epochs=2)
    final_epochs: int | None = Field(None, ge=0, description="epochs after the last step (default: finetune.epochs)")

    @model_validator(mode="after")
    def _check(self) -> ChannelsConfig:
        # ConfigError (not ValueError) so the Python API and recipes both get the one-line message.
        checks = [("ratio", self.ratio), ("max_ratio", self.max_ratio)]
        checks += [(f"per_layer[{k!r}]", v) for k, v in self.per_layer.items()]
        checks += [("sensitivity_ratios", r) for r in self.sensitivity_ratios]
        if self.target_macs_reduction is not None:
            checks.append(("target_macs_reduction", self.target_macs_reduction))
        if isinstance(self.round_to, int) and self.round_to < 1:
            raise ConfigError(f"channels: round_to = {self.round_to} must be >= 1 (or 'auto')")
        for key, value in checks:
            if not 0 <= value < 1:
                raise ConfigError(
                    f"channels: {key} = {value} must be in [0, 1): 1.0 would remove every channel; "
                    "use a smaller fraction (or exclude the layer with scope.exclude)"
                )
        return self

    def multiple(self) -> int:
        """The channel multiple: `round_to`, with auto resolved for this CPU."""
        return channel_block() if self.round_to == "auto" else int(self.round_to)

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> ChannelsConfig:
        """The MACs to remove (10-75%), the channel multiple (the target runtime's blocks), the importance
        criterion, one or two steps, and their fine-tuning."""
        return cls(
            target_macs_reduction=round(trial.suggest_float(f"{prefix}.target_macs_reduction", 0.1, 0.75), 4),
            round_to=int(trial.suggest_categorical(f"{prefix}.round_to", list(ctx.round_to))),
            criterion=trial.suggest_categorical(f"{prefix}.criterion", ["l1", "taylor"]),
            steps=trial.suggest_int(f"{prefix}.steps", 1, 2),
            finetune=suggest_finetune(trial, f"{prefix}.finetune", ctx, (2e-4, 2e-3)),
        )


def _input_shape(artifact: Artifact, ctx: StageContext) -> tuple[int, ...]:
    """The input's shape, with its dtype when not floating point (token ids), to trace the model with."""
    if ctx.example_input is not None:
        return InputShape.of(ctx.example_input)
    first = ctx.batches(1) if ctx.batches is not None else []
    if first:
        return InputShape.of(first[0][0])
    shape = artifact.input_shape
    if shape is None:
        raise ConfigError("channels needs an example input to trace the model: pass val_loader= or train_loader=")
    return shape


def _group_ratios(model: nn.Module, cfg: ChannelsConfig, groups: list[ChannelGroup], layers) -> tuple[dict, set]:
    """Each group's ratio: the smallest per-layer setting among its layers, else `ratio`; and the groups
    that have a per-layer setting (kept fixed when the amount is searched)."""
    explicit = per_layer(model, layers, cfg.per_layer, None, "channels")
    ratios, fixed = {}, set()
    for g in groups:
        values = [explicit[n] for n in g.layers if explicit.get(n) is not None]
        ratios[g.root] = min(values) if values else cfg.ratio
        if values:
            fixed.add(g.root)
    return ratios, fixed


def _accuracy(model: nn.Module, batches, ctx: StageContext) -> float:
    if batches:
        return evaluate(model, batches)
    acc = ctx.accuracy(model)
    if acc is None:
        raise ConfigError("channels: mode 'sensitivity' needs data: pass train_loader= or val_loader=")
    return acc


def _sensitivity(model, cfg, groups, originals, shape, batches, ctx) -> dict[str, dict[float, float]]:
    """Accuracy drop (points) of pruning each group alone at each ratio."""
    base = _accuracy(model, batches, ctx)
    curves = {}
    for i, g in enumerate(groups, 1):
        ctx.progress.line(f"[channels] sensitivity {i}/{len(groups)}: {g.root}")
        curves[g.root] = {
            r: base - _accuracy(pruned_copy(model, groups, {g.root: r}, originals, shape, cfg.multiple()), batches, ctx)
            for r in sorted(cfg.sensitivity_ratios)
            if r <= cfg.max_ratio
        }
    return curves


def _within_budget(curve: dict[float, float], budget: float) -> float:
    """The largest ratio whose drop, and every smaller ratio's, stays within `budget` points."""
    best = 0.0
    for r in sorted(curve):
        if curve[r] > budget:
            break
        best = r
    return best


def _search(candidates: list[float], allocate, macs_of, target: float) -> float:
    """The smallest candidate (sorted ascending; MACs fall as it grows) whose allocation reaches `target`."""
    lo, hi = 0, len(candidates) - 1
    if macs_of(allocate(candidates[hi])) > target:
        return candidates[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if macs_of(allocate(candidates[mid])) <= target:
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo]


def _give_back(ratios: dict[str, float], groups, fixed, originals, cfg, macs_of, target: float) -> dict[str, float]:
    """Return channels to groups, one rounding step at a time (most-pruned group first), while the MAC
    target still holds: with `round_to` the channel counts move in jumps, so the smallest common ratio
    overshoots the target (57% instead of 50% fewer MACs on ResNet-8 x4 with round_to = 8)."""
    ratios = dict(ratios)
    improved = True
    while improved:
        improved = False
        for g in sorted(groups, key=lambda g: -ratios[g.root]):
            if g.root in fixed:
                continue
            original = originals[g.root]
            keep = keep_count(original, g.channels, ratios[g.root], g.channel_groups, cfg.multiple())
            more = keep + math.lcm(cfg.multiple(), g.channel_groups)
            if more > g.channels:
                continue
            trial = {**ratios, g.root: 1 - more / original}
            if macs_of(trial) <= target:
                ratios, improved = trial, True
    return ratios


def _allocate(model, graph, cfg, groups, settings, curves, originals, shape, macs0, fraction) -> tuple[dict, str]:
    """Ratios for this step (fractions of the original channels) and a line saying how they were chosen."""
    ratios, explicit = settings
    fixed = {g.root: ratios[g.root] * fraction for g in groups if g.root in explicit}

    def allocate(x: float, scale: float = 1.0) -> dict[str, float]:
        if cfg.mode == "sensitivity":
            chosen = {g.root: _within_budget(curves[g.root], x) * scale for g in groups}
        else:
            chosen = {g.root: min(x, cfg.max_ratio) * scale for g in groups}
        return {**chosen, **fixed}

    if cfg.target_macs_reduction is None:
        if cfg.mode == "sensitivity":
            return allocate(cfg.accuracy_budget, fraction), f"accuracy budget {cfg.accuracy_budget} points"
        return {g.root: ratios[g.root] * fraction for g in groups}, f"ratio {cfg.ratio * fraction:g}"
    target = macs0 * (1 - cfg.target_macs_reduction * fraction)

    estimate = MacEstimator(model, graph, shape)

    def macs_of(ratios: dict[str, float]) -> int:
        return estimate(groups, ratios, originals, cfg.multiple())

    if cfg.mode == "sensitivity":
        candidates = sorted({0.0, *(d for c in curves.values() for d in c.values())})
        chosen = _search(candidates, allocate, macs_of, target)
        how = f"accuracy budget {chosen:.3f} points"
    else:
        candidates = [i / 200 for i in range(int(cfg.max_ratio * 200) + 1)]
        chosen = _search(candidates, allocate, macs_of, target)
        how = f"uniform ratio {chosen:.3f}"
    found = allocate(chosen)
    if macs_of(found) > target:
        return found, f"{how} (max_ratio {cfg.max_ratio} stops short of {target:,.0f} MACs)"
    return _give_back(
        found, groups, fixed, originals, cfg, macs_of, target
    ), f"{how}, then channels given back while under {target:,.0f} MACs"


def _nothing_to_prune(model: nn.Module) -> str:
    fixed = sorted({type(m).__name__ for m in fixed_width_layers(model)})
    why = f", a layer whose width is fixed ({', '.join(fixed)})" if fixed else ""
    return (
        f"channels: no channel group can be pruned (each contains an excluded layer, the classifier{why}, or an "
        "operation whose channel coupling cannot be followed, such as a matmul or einsum between activations); "
        "widen scope.include, or use the prune stage (unstructured) on such layers"
    )


@register_stage(ChannelsConfig)
def channels(artifact: Artifact, cfg: ChannelsConfig, ctx: StageContext) -> Artifact:
    model = artifact.model
    if has_parametrizations(model) or artifact.quantization is not None or artifact.precision != "float32":
        raise ConfigError(
            "channels needs a plain float model: put the channels stage before prune, share, quantize and half"
        )
    shape = _input_shape(artifact, ctx)
    layers = select_layers(model, cfg.scope, "channels")
    classifier = classifier_name(model, shape)
    chosen = {n for n, _ in layers} - {classifier}
    ignored_names = {n for n, _ in prunable_weights(model) if n not in chosen}
    ignored = [m for n, m in prunable_weights(model) if n in ignored_names]
    graph = dependency_graph(model, shape)
    groups = find_groups(model, graph, ignored)
    if not groups:
        raise ScopeError(_nothing_to_prune(model))
    settings = _group_ratios(model, cfg, groups, [(n, m) for n, m in layers if n in chosen])
    originals = {g.root: g.channels for g in groups}
    macs0 = count_macs(model, shape)
    needs_batches = cfg.criterion == "taylor" or cfg.mode == "sensitivity"
    batches = ctx.batches(cfg.calibration_batches) if (needs_batches and ctx.batches) else None
    notes = score_groups(model, graph, groups, cfg.criterion, batches)
    if cfg.round_to == "auto":
        notes.append(f"channel counts kept multiples of {cfg.multiple()} (round_to auto: this CPU's kernel blocks)")
    curves = _sensitivity(model, cfg, groups, originals, shape, batches, ctx) if cfg.mode == "sensitivity" else {}
    steps = _Steps(cfg, ctx, shape, ignored_names, batches, macs0, notes)
    model, arch, graph, groups, history, edits = steps.run(
        model, artifact.arch, graph, groups, settings, curves, originals
    )
    record = StageRecord(
        stage="channels",
        config=cfg.model_dump(mode="json"),
        layers=_rows(model, graph, groups, originals, curves),
        accuracy=ctx.accuracy(model),
        history=history,
        edits=[e.model_dump() for e in edits],
        notes=notes,
    )
    return artifact.with_record(record, model=model, arch=arch)


@dataclass
class _Steps:
    """The stage's steps: remove channels, fine-tune, and with a budget undo the first step that loses
    more than `max_accuracy_drop` against the accuracy the stage started with (and stop there)."""

    cfg: ChannelsConfig
    ctx: StageContext
    shape: tuple[int, ...]
    ignored: set[str]  # names of the layers whose channels stay (excluded, the classifier)
    batches: list | None
    macs0: int
    notes: list[str]

    def run(self, model, arch, graph, groups, settings, curves, originals):
        cfg, history, edits = self.cfg, [], []
        for step in range(1, cfg.steps + 1):
            if step > 1:  # importance after fine-tuning, on the current (already smaller) model
                graph = dependency_graph(model, self.shape)
                groups = find_groups(model, graph, self._ignored(model))
                score_groups(model, graph, groups, cfg.criterion, self.batches)
            budgeted = cfg.max_accuracy_drop is not None and self.ctx.start_accuracy is not None
            before = (copy.deepcopy(model), arch, len(edits), len(history)) if budgeted else None
            fraction = step / cfg.steps
            ratios, how = _allocate(
                model, graph, cfg, groups, settings, curves, originals, self.shape, self.macs0, fraction
            )
            remove_channels(model, graph, groups, ratios, originals, cfg.multiple())
            require_runs(model, self.shape)
            new = edits_from_history(graph.pruning_history())
            arch, edits = arch.with_channel_edits(self.shape, new), edits + new
            macs = count_macs(model, self.shape)
            less = 100 * (1 - macs / self.macs0)
            self.notes.append(f"step {step}/{cfg.steps}: {how}; MACs {self.macs0:,} -> {macs:,} ({less:.1f}% less)")
            self.ctx.progress.line(f"[channels] {self.notes[-1]}")
            train_cfg = cfg.finetune
            if step == cfg.steps and cfg.final_epochs is not None:
                train_cfg = train_cfg.model_copy(update={"epochs": cfg.final_epochs})
            history += [{"step": step, **h} for h in self.ctx.train(model, train_cfg, f"channels {step}/{cfg.steps}")]
            if before is not None and self._over_budget(model, step):
                model, arch, kept_edits, kept_history = before
                edits, history = edits[:kept_edits], history[:kept_history]
                graph = dependency_graph(model, self.shape)
                groups = find_groups(model, graph, self._ignored(model))
                break
        return model, arch, graph, groups, history, edits

    def _ignored(self, model) -> list:
        return [m for n, m in model.named_modules() if n in self.ignored]

    def _over_budget(self, model, step: int) -> bool:
        budget, start = self.cfg.max_accuracy_drop, self.ctx.start_accuracy
        if budget is None or start is None:
            return False
        accuracy = self.ctx.accuracy(model)
        if accuracy is None or start - accuracy <= budget:
            return False
        self.notes.append(
            f"accuracy budget {budget:g} points: step {step} of {self.cfg.steps} lost {start - accuracy:.2f} "
            f"({start:.2f}% -> {accuracy:.2f}%), so it is undone and the stage stops at step {step - 1}"
        )
        self.ctx.progress.line(f"[channels] {self.notes[-1]}")
        return True


def _rows(model, graph, groups, originals, curves) -> list[dict]:
    modules = dict(model.named_modules())
    rows = []
    for g in groups:
        after = graph.get_out_channels(modules[g.root])
        row = {
            "group": g.root,
            "layers": g.layers,
            "channels": originals[g.root],
            "kept": after,
            "kept_percent": 100.0 * after / originals[g.root],
        }
        if curves:
            row["sensitivity"] = {f"{r:g}": round(d, 3) for r, d in curves[g.root].items()}
        rows.append(row)
    return rows
