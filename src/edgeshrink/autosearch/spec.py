"""What a search looks for, as data: stored in the study, so that a worker joining it (on this machine or another)
searches the same space for the same device, and is refused when it would not."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from edgeshrink.errors import ConfigError

OBJECTIVES = {"accuracy": "maximize", "bytes": "minimize", "latency": "minimize"}
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchSpec:
    """The space (a recipe template, or a zoo family), the device and its constraints, the objectives."""

    device: str
    objectives: tuple[str, ...] = ("accuracy", "bytes")
    stages: tuple[str, ...] = ()  # recipe search: the template
    family: str | None = None  # architecture search: a zoo family with a registered space
    latency_budget_ms: float | None = None
    max_accuracy_drop: float | None = None
    max_epochs: int = 3  # recipe search: most fine-tuning epochs per training run; architecture: training epochs
    per_layer: bool = True
    model: str = "user model"  # what is compressed: a task's zoo model, or the user's
    holdout: int | None = None  # training examples held out as the validation split (tasks)
    seed: int = 0
    baseline: str | None = None  # fingerprint of the baseline's weights: every worker compresses the same model

    def __post_init__(self) -> None:
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives or len(set(self.objectives)) != len(self.objectives):
            raise ConfigError(
                f"objectives {','.join(self.objectives)!r}: name each of {', '.join(OBJECTIVES)} at most once"
            )
        if "accuracy" not in self.objectives:
            raise ConfigError("objectives must include accuracy (the search maximises it, alone or against a cost)")
        if (self.family is None) == (not self.stages):
            raise ConfigError("a search explores either a recipe (stages) or an architecture family, not both")
        if self.max_epochs < 1:
            raise ConfigError(f"max epochs must be >= 1, got {self.max_epochs}")

    @property
    def mode(self) -> str:
        return "architecture" if self.family else "recipe"

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SearchSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**values)

    def check_joins(self, stored: dict) -> None:
        """ConfigError when the study was started with another space, device, objectives or baseline."""
        mine = self.to_dict()
        theirs = SearchSpec.from_dict(stored).to_dict()
        differ = [k for k in mine if k in stored and mine[k] != theirs[k]]  # a setting the study predates: no say
        if differ:
            k = differ[0]
            raise ConfigError(
                f"this study searches with {k} = {theirs[k]!r}, not {mine[k]!r}: start the worker with the study's "
                "settings, or name a new study with --study"
            )


def fingerprint(model) -> str:
    """The first 16 hex digits of the SHA-256 of a model's state dict (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
