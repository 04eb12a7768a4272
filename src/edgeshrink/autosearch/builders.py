"""How a trial turns its sampled values into a measured candidate: a recipe from the stages' spaces run on the
baseline, or an architecture from a zoo family's space, refused before training when it cannot fit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeshrink.autosearch.candidate import Baseline, Candidate, Evaluator
from edgeshrink.autosearch.space import sample_recipe, space_context
from edgeshrink.autosearch.storage import require_optuna
from edgeshrink.errors import ConfigError
from edgeshrink.models.registry import create_model, model_entry, searchable_models
from edgeshrink.recipes import load_recipe
from edgeshrink.train import Progress

Measure = Callable[[Path, Callable[[dict], None] | None], Candidate]  # (folder, on_epoch) -> candidate
Build = Callable[[Any], Measure]  # trial -> its sampled candidate, measured when called


def recipe_builder(evaluator: Evaluator, baseline: Baseline | None) -> Build:
    assert baseline is not None
    spec = evaluator.spec
    ctx = space_context(baseline.model, evaluator.device, spec.max_epochs, spec.per_layer)

    def build(trial: Any) -> Measure:
        recipe = sample_recipe(trial, spec.stages, ctx, f"search-trial-{trial.number}")
        return lambda folder, on_epoch: evaluator.recipe(recipe, folder, on_epoch)

    return build


def architecture_builder(evaluator: Evaluator, family: str) -> Build:
    """Candidates of a zoo family: its registered space's keyword arguments; an architecture whose int8 weights
    or activations alone exceed the device (or whose estimated latency exceeds the budget) is pruned untrained."""
    entry = model_entry(family)
    if entry.space is None:
        raise ConfigError(
            f"model {family!r} has no architecture search space: choose from {', '.join(searchable_models())}"
        )
    data = evaluator.data
    shape = tuple(data.example.shape[1:])

    def build(trial: Any) -> Measure:
        kwargs = {**entry.space(trial), "num_classes": data.num_classes}  # type: ignore[misc]
        model = create_model(family, input_shape=shape, **kwargs)
        reason = evaluator.infeasible_before_training(model)
        if reason is not None:
            trial.set_user_attr("infeasible", reason)
            raise require_optuna().TrialPruned(f"infeasible before training: {reason}")
        arch = {"model": family, "model_kwargs": kwargs, "input_shape": list(shape)}
        return lambda folder, on_epoch: evaluator.architecture(model, arch, folder, on_epoch)

    return build


def reference_candidate(evaluator: Evaluator, name: str, out: Path, progress: Progress) -> dict:
    """A built-in recipe's result measured as candidates are (once per study), to mark on the report."""
    progress.line(f"[search] the built-in recipe {name!r} for comparison")
    candidate = evaluator.recipe(load_recipe(name), out / f"reference-{name}", kind="reference")
    return {"name": name, "candidate": candidate.to_dict()}
