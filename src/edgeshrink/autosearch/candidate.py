"""One candidate of a search, built and measured: a recipe run on the baseline, or an architecture trained briefly,
then exported for the device (verified in its runtime) and judged against the device's constraints.

Accuracy is the validation accuracy of the PyTorch model the exported file reproduces (the export checked that
file against it in the runtime); the test accuracy is reported, never searched on.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.autosearch.deploy import Deployable, deploy
from edgeshrink.autosearch.spec import SearchSpec
from edgeshrink.devices.estimate import estimate_latency
from edgeshrink.devices.schema import Device
from edgeshrink.io import load, save_checkpoint
from edgeshrink.measure.profile import measure_artifact
from edgeshrink.pipeline import compress
from edgeshrink.recipes import Recipe
from edgeshrink.train import Progress, TrainConfig, evaluate, fit, seed_everything

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SearchData:
    """What every candidate is trained and judged on: `train()` gives the training batches (the same order for every
    candidate), `val` the validation split the search chooses on, `test` the split it only reports; calibration
    and verification inputs for the exports."""

    train: Callable[[], Batches]
    val: Batches
    test: Batches | None
    calibration: list[torch.Tensor]
    verify: list[torch.Tensor]
    example: torch.Tensor
    num_classes: int
    holdout: int | None = None  # a task's training examples held out as `val` (None: the user's own loaders)


@dataclass
class Baseline:
    """The trained model a recipe search compresses, and its accuracies."""

    model: nn.Module
    arch: dict | None
    accuracy: float  # on the validation split
    test_accuracy: float | None = None
    path: str | None = None  # the checkpoint it was loaded from or saved to


@dataclass
class Candidate:
    """A measured candidate, as a trial records it (JSON-ready)."""

    kind: str  # recipe | architecture | reference
    folder: str
    val_accuracy: float
    test_accuracy: float | None
    deployable: dict
    constraints: dict[str, float]  # name -> violation; <= 0 holds
    seconds: float
    macs: int
    recipe: dict | None = None
    arch: dict | None = None
    container_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    number: int | None = None

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    def value(self, objective: str) -> float:
        return {
            "accuracy": self.val_accuracy,
            "bytes": float(self.deployable["bytes"]),
            "latency": float(self.deployable["latency_ms"]),
        }[objective]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "feasible": self.feasible}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def constraints(dep: Deployable, device: Device, spec: SearchSpec, drop: float) -> dict[str, float]:
    """Each constraint as a violation (<= 0 holds), relative to the device's capacity or the budget."""
    out = {"flash": dep.bytes / device.flash_bytes - 1.0, "ram": dep.ram_bytes / device.ram_bytes - 1.0}
    if spec.latency_budget_ms is not None:
        out["latency"] = dep.latency_ms / spec.latency_budget_ms - 1.0
    if spec.max_accuracy_drop is not None:
        out["accuracy_drop"] = drop - spec.max_accuracy_drop
    return out


class Evaluator:
    """Builds and measures candidates; everything fixed for the whole search lives here."""

    def __init__(self, spec: SearchSpec, device: Device, data: SearchData, baseline: Baseline | None, **options):
        self.spec, self.device, self.data, self.baseline = spec, device, data, baseline
        self.threads: int = options.get("threads", 1)
        self.verbose: bool = options.get("verbose", False)
        self.train_config: TrainConfig = options.get("train_config") or TrainConfig(epochs=spec.max_epochs)

    def _measure(self, artifact: Artifact, folder: Path, kind: str, started: float, **fields) -> Candidate:
        dep = deploy(artifact, self.device, folder, self.data.calibration, self.data.verify, self.threads)
        val = evaluate(dep.model, self.data.val)
        test = None if self.data.test is None else evaluate(dep.model, self.data.test)
        reference = self.baseline.accuracy if self.baseline is not None else val
        macs = measure_artifact(artifact).macs.dense
        return Candidate(
            kind, str(folder), val, test, dep.to_dict(), constraints(dep, self.device, self.spec, reference - val),
            time.perf_counter() - started, macs, notes=dep.notes, **fields,
        )  # fmt: skip

    def recipe(self, recipe: Recipe, folder: Path, on_epoch: Callable[[dict], None] | None = None, kind="recipe"):
        """Compress the baseline with `recipe` into `folder`, then export and measure the file it wrote."""
        assert self.baseline is not None
        started = time.perf_counter()
        result = compress(
            self.baseline.model, recipe, train_loader=self.data.train(), val_loader=self.data.val, out=folder,
            seed=self.spec.seed, arch=self.baseline.arch, progress=self.verbose,
            baseline_accuracy=self.baseline.accuracy, on_epoch=on_epoch,
        )  # fmt: skip
        artifact = load(folder, model=copy.deepcopy(self.baseline.model))
        recipe_json = result.report["recipe"]
        return self._measure(
            artifact, folder, kind, started, recipe=recipe_json, container_bytes=result.report["container"]["bytes"]
        )

    def infeasible_before_training(self, model: nn.Module) -> str | None:
        """Why an architecture cannot fit the device whatever its training (int8 weights and activations are
        lower bounds of what any exported file needs), or None."""
        costs = measure_artifact(Artifact(model, example_input=self.data.example[:1]))
        flash, ram = costs.weights.int8, costs.activations.peak_bytes // 4
        latency = estimate_latency(dataclasses.replace(costs, dtype="int8"), self.device).ms
        if flash > self.device.flash_bytes:
            return f"int8 weights alone ({flash:,} B) exceed the flash of {self.device.name}"
        if ram > self.device.ram_bytes:
            return f"int8 activations alone ({ram:,} B at their peak) exceed the RAM of {self.device.name}"
        budget = self.spec.latency_budget_ms
        if budget is not None and latency > budget:
            return f"estimated int8 latency {latency:.2f} ms exceeds the budget of {budget:g} ms"
        return None

    def architecture(self, model: nn.Module, arch: dict, folder: Path, on_epoch=None) -> Candidate:
        """Train a candidate architecture briefly (the same seed and batches for every candidate), save it, then
        export and measure it."""
        started = time.perf_counter()
        seed_everything(self.spec.seed)
        cfg = self.train_config.model_copy(update={"epochs": self.spec.max_epochs})
        fit(model, self.data.train(), cfg, self.data.val, stage="candidate", progress=Progress(self.verbose),
            after_epoch=on_epoch)  # fmt: skip
        artifact = Artifact(model.eval(), Arch.parse(arch), example_input=self.data.example[:1])
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder / "model.pt", artifact, evaluate(model, self.data.val))
        return self._measure(artifact, folder, "architecture", started, arch=arch)
