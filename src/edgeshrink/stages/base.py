"""Stages: a frozen, JSON-round-trippable config per technique and a handler registered for its type.

`apply_stage(artifact, config, ctx) -> Artifact` applies any of them: a handler returns the artifact
after its stage (the model, architecture record, quantization or precision it changed, and its
`StageRecord` appended). Handlers may change `artifact.model` in place (`compress` hands them a copy).
They never run an optimizer themselves: they ask `ctx.train` for epochs of training, which is either
the built-in loop or the user's own `train_fn`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.config import Config
from edgeshrink.errors import ConfigError
from edgeshrink.scope import per_layer, select_layers
from edgeshrink.train import DistillConfig, Progress, TrainConfig

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class Suggest(Protocol):
    """What a search trial offers a stage's search space (an Optuna trial is one; so is any object with
    these three methods). Names must be unique within a recipe: spaces prefix theirs with the stage's."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class LayerInfo:
    """A layer a search may set per-layer values for: its name, kind (conv / linear) and weight count."""

    name: str
    kind: str
    weights: int


@dataclass(frozen=True)
class SpaceContext:
    """What a stage's search space may depend on: the model's prunable layers, the most fine-tuning epochs a
    trial may spend per training run, the channel multiples the target runtime runs fast, and whether values
    may be chosen per layer (else one value for all layers)."""

    layers: tuple[LayerInfo, ...]
    max_epochs: int = 3
    round_to: tuple[int, ...] = (8, 16)
    per_layer: bool = True


def suggest_finetune(
    trial: Suggest, prefix: str, ctx: SpaceContext, lr: tuple[float, float], min_epochs: int = 1
) -> TrainConfig:
    """Fine-tuning epochs (min_epochs..ctx.max_epochs), an Adam learning rate (log-uniform in `lr`), and whether
    to learn from the uncompressed model's soft targets (distillation, T = 4, half the loss)."""
    epochs = trial.suggest_int(f"{prefix}.epochs", min(min_epochs, ctx.max_epochs), ctx.max_epochs)
    rate = trial.suggest_float(f"{prefix}.lr", lr[0], lr[1], log=True)
    distill = (
        DistillConfig(temperature=4.0, alpha=0.5)
        if trial.suggest_categorical(f"{prefix}.distill", [False, True])
        else None
    )
    return TrainConfig(epochs=epochs, optimizer="adam", lr=rate, distill=distill)


class StageConfig(Config):
    """Base of every stage config: frozen, unknown keys refused, errors are ConfigErrors."""

    kind: ClassVar[str] = ""
    type: str

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> StageConfig:
        """A config of this stage sampled by `trial` (`edgeshrink search`); every registered stage declares
        its space next to its config."""
        raise NotImplementedError(f"stage {cls._label()!r} declares no search space")

    def finetune_config(self) -> TrainConfig | None:
        return getattr(self, "finetune", None)

    def check(self, model: nn.Module) -> None:
        """Fail before any stage runs when the scope or a per-layer key matches no layer of `model`."""
        scope = getattr(self, "scope", None)
        if scope is None and not getattr(self, "per_layer", None):
            return
        layers = select_layers(model, scope, self.type)
        settings = getattr(self, "per_layer", None)
        if settings:
            per_layer(model, layers, settings, None, self.type)


@dataclass
class StageContext:
    """What a stage may use besides the artifact: training, evaluation, data examples, progress."""

    finetune: Callable[[nn.Module, TrainConfig, str], list[dict]] | None
    evaluate: Callable[[nn.Module], float] | None
    progress: Progress = field(default_factory=Progress)
    seed: int = 0
    example_input: torch.Tensor | None = None
    # n -> up to n training batches, for stages that need data but no training (importance, sensitivity)
    batches: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    calibration: Batches | None = None  # batches for quantization ranges
    # accuracy when the stage started, measured by apply_stage for stages with a max_accuracy_drop
    start_accuracy: float | None = None
    # the state a prune stage with `rewind` resets the kept weights to (lottery tickets)
    rewind_weights: dict[str, torch.Tensor] | None = None

    def train(self, model: nn.Module, cfg: TrainConfig, label: str) -> list[dict]:
        """Fine-tune for `cfg.epochs` epochs (no-op at 0); an error if nobody can train."""
        if cfg.epochs == 0:
            return []
        if self.finetune is None:
            raise ConfigError(
                f"{label} asks for {cfg.epochs} epochs of fine-tuning but no training data was given: "
                "pass train_loader= or train_fn=, or set the stage's finetune.epochs = 0"
            )
        return self.finetune(model, cfg, label)

    def accuracy(self, model: nn.Module) -> float | None:
        return None if self.evaluate is None else self.evaluate(model)


Handler = Callable[[Artifact, Any, StageContext], Artifact]
_STAGES: dict[str, tuple[type[StageConfig], Handler]] = {}


def register_stage(config_cls: type[StageConfig]) -> Callable[[Handler], Handler]:
    """Decorator: `handler(artifact, config, ctx) -> Artifact` applies configs of `config_cls`."""
    kind = config_cls.model_fields["type"].default
    if not kind:
        raise ValueError(f"{config_cls.__name__} needs a default `type`")

    def wrap(handler: Handler) -> Handler:
        if kind in _STAGES:
            raise ValueError(f"stage {kind!r} registered twice")
        _STAGES[kind] = (config_cls, handler)
        return handler

    return wrap


def list_stages() -> list[str]:
    _load_builtin_stages()
    return sorted(_STAGES)


def stage_config_class(kind: str) -> type[StageConfig]:
    _load_builtin_stages()
    if kind not in _STAGES:
        raise ConfigError(f"unknown stage type {kind!r}; known stages: {', '.join(sorted(_STAGES))}")
    return _STAGES[kind][0]


def parse_stage(data: Any, where: str = "stage") -> StageConfig:
    """Build a stage config from plain data (a TOML table), with a one-line error naming the problem."""
    if isinstance(data, StageConfig):
        return data
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{where} needs a `type` (one of: {', '.join(list_stages())})")
    return stage_config_class(str(data["type"])).parse(data, where)


def apply_stage(artifact: Artifact, config: StageConfig, ctx: StageContext) -> Artifact:
    """Apply one stage and record what it did and how long it took."""
    _load_builtin_stages()
    handler = _STAGES[config.type][1]
    started = time.perf_counter()
    before = len(artifact.records)
    budget = getattr(config, "max_accuracy_drop", None)
    reference = ctx.accuracy(artifact.model) if budget is not None else None
    result = handler(artifact, config, dataclasses.replace(ctx, start_accuracy=reference))
    if len(result.records) != before + 1:
        raise RuntimeError(f"stage {config.type!r} must append exactly one StageRecord to the artifact")
    record = result.records[-1]
    record.seconds = time.perf_counter() - started
    if budget is not None and (reference is None or record.accuracy is None):
        record.notes.append(f"max_accuracy_drop {budget:g} NOT enforced: no validation data (val_loader= or eval_fn=)")
    elif budget is not None:
        drop = reference - record.accuracy
        record.budget_met = drop <= budget + 1e-9
        if not record.budget_met:
            record.notes.append(f"accuracy budget {budget:g} points NOT met: the stage lost {drop:.2f}")
    return result


def _load_builtin_stages() -> None:
    # Importing the modules registers their stages; done lazily to keep `import edgeshrink` light.
    from edgeshrink.stages import channels, half, prune, quantize, share  # noqa: F401
