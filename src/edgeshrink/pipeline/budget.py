"""A recipe's accuracy budget (`max_accuracy_drop` at the top of a recipe): the points of validation
accuracy the whole run may lose against the baseline.

Each stage that has a budget of its own (prune, share, quantize) gets what is left of the recipe's:
the recipe budget minus what earlier stages already lost, or the stage's own budget when that is
tighter. After the last stage the run is judged as a whole; the report's `budget` entry says whether
it held, and `compress --strict` turns a miss into an error before anything is written.
"""

from __future__ import annotations

from edgeshrink.stages.base import StageConfig


def with_remaining_budget(
    cfg: StageConfig, budget: float | None, baseline: float | None, current: float | None
) -> StageConfig:
    """`cfg` with its `max_accuracy_drop` set to what is left of the recipe's budget (never looser than
    the stage's own). Unchanged when the recipe has no budget, the stage takes none, or no accuracy is
    known."""
    if budget is None or baseline is None or current is None or "max_accuracy_drop" not in type(cfg).model_fields:
        return cfg
    remaining = max(0.0, budget - (baseline - current))
    own = getattr(cfg, "max_accuracy_drop", None)
    tighter = remaining if own is None else min(own, remaining)
    return cfg.model_copy(update={"max_accuracy_drop": round(tighter, 6)})


def recipe_budget(budget: float | None, baseline: float | None, final: float | None) -> dict | None:
    """report["budget"]: the recipe's budget, the accuracies it was judged on, whether it held."""
    if budget is None:
        return None
    if baseline is None or final is None:
        note = f"recipe accuracy budget {budget:g} points NOT enforced: no validation data (val_loader= or eval_fn=)"
        return {
            "max_accuracy_drop": budget,
            "baseline": baseline,
            "final": final,
            "drop": None,
            "met": None,
            "note": note,
        }
    drop = baseline - final
    met = drop <= budget + 1e-9
    verdict = "met" if met else "NOT met"
    note = f"recipe accuracy budget {budget:g} points {verdict}: {baseline:.2f}% -> {final:.2f}% (drop {drop:.2f})"
    return {"max_accuracy_drop": budget, "baseline": baseline, "final": final, "drop": drop, "met": met, "note": note}
