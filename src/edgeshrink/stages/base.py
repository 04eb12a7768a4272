"""Stages: a frozen, JSON-round-trippable config per technique and a handler registered for its type.

`apply_stage(model, config, ctx)` applies any of them. A recipe is a list of configs. Handlers never
run an optimizer themselves: they ask `ctx.finetune` for epochs of training, which is either the
built-in loop or the user's own `train_fn`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.train import Progress, TrainConfig


class StageConfig(BaseModel):
    """Base of every stage config: frozen, unknown keys refused, versioned."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = ""
    type: str

    def finetune_config(self) -> TrainConfig | None:
        return getattr(self, "finetune", None)


@dataclass
class StageContext:
    """What a stage may use besides the model: training, evaluation, data examples, progress."""

    finetune: Callable[[nn.Module, TrainConfig, str], list[dict]] | None
    evaluate: Callable[[nn.Module], float] | None
    progress: Progress = field(default_factory=Progress)
    seed: int = 0
    example_input: torch.Tensor | None = None
    # n -> up to n training batches, for stages that need data but no training (importance, sensitivity)
    batches: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

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


class StageRecord(BaseModel):
    """What a stage did: its config, per-layer details, accuracy after it, fine-tuning history, time."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    config: dict
    layers: list[dict] = []
    accuracy: float | None = None
    history: list[dict] = []
    edits: list[dict] = []  # structural edits as data (channels removed), replayable: see architecture.py
    seconds: float = 0.0
    notes: list[str] = []


Handler = Callable[[nn.Module, Any, StageContext], StageRecord]
_STAGES: dict[str, tuple[type[StageConfig], Handler]] = {}


def register_stage(config_cls: type[StageConfig]) -> Callable[[Handler], Handler]:
    """Decorator: `handler(model, config, ctx) -> StageRecord` applies configs of `config_cls`."""
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


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    return f"{where}: {err['msg']}" if where else err["msg"]


def parse_stage(data: dict, where: str = "stage") -> StageConfig:
    """Build a stage config from plain data (a TOML table), with a one-line error naming the problem."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{where} needs a `type` (one of: {', '.join(list_stages())})")
    cls = stage_config_class(str(data["type"]))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(k for k in cls.model_fields if k != "type")
        raise ConfigError(f"{where} ({data['type']}): {_first_error(exc)} (allowed keys: {allowed})") from None


def apply_stage(model: nn.Module, config: StageConfig, ctx: StageContext) -> StageRecord:
    """Apply one stage to `model` in place and record what it did and how long it took."""
    _load_builtin_stages()
    handler = _STAGES[config.type][1]
    started = time.perf_counter()
    record = handler(model, config, ctx)
    record.seconds = time.perf_counter() - started
    return record


def _load_builtin_stages() -> None:
    # Importing the modules registers their stages; done lazily to keep `import edgeshrink` light.
    from edgeshrink.stages import channels, encode, prune, quantize, share  # noqa: F401
