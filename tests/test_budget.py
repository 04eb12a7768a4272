"""A recipe's accuracy budget: shared out among the stages, judged over the whole run, strict = error."""

import pytest
from helpers import SmallNet, loaders

import edgeshrink
from edgeshrink.errors import BudgetError
from edgeshrink.pipeline.budget import recipe_budget, with_remaining_budget
from edgeshrink.recipes import list_recipes, load_recipe
from edgeshrink.stages.base import parse_stage
from edgeshrink.train import evaluate


def test_each_stage_gets_what_is_left_never_more_than_its_own():
    prune = parse_stage({"type": "prune", "sparsity": 0.9})
    assert with_remaining_budget(prune, 1.0, 90.0, 89.6).max_accuracy_drop == pytest.approx(0.6)
    own = parse_stage({"type": "prune", "sparsity": 0.9, "max_accuracy_drop": 0.2})
    assert with_remaining_budget(own, 1.0, 90.0, 89.6).max_accuracy_drop == pytest.approx(0.2)
    assert with_remaining_budget(prune, 1.0, 90.0, 88.0).max_accuracy_drop == 0.0  # spent: nothing more to lose
    assert with_remaining_budget(prune, 1.0, None, None) is prune  # nothing to judge with
    half = parse_stage({"type": "half"})
    assert with_remaining_budget(half, 1.0, 90.0, 89.0) is half  # a stage without a budget of its own
    verdict = recipe_budget(1.0, 90.0, 88.5)
    assert verdict["met"] is False and verdict["drop"] == pytest.approx(1.5) and "NOT met" in verdict["note"]


def test_builtin_recipes_carry_the_default_budget():
    for name in list_recipes():
        assert load_recipe(name).max_accuracy_drop == 1.0, name


def test_recipe_budget_holds_a_greedy_prune_stage(trained, tmp_path):
    train_loader, val_loader = loaders()
    recipe = {
        "name": "greedy",
        "max_accuracy_drop": 1.0,
        "stages": [{"type": "prune", "sparsity": 0.995, "iterations": 3, "finetune": {"epochs": 0}}],
    }
    result = edgeshrink.compress(
        trained, recipe, train_loader=train_loader, val_loader=val_loader, out=tmp_path / "r", progress=False
    )
    budget = result.report["budget"]
    baseline = evaluate(trained, val_loader)
    rebuilt = edgeshrink.unpack(result.path, SmallNet())
    assert budget["met"] is True
    assert baseline - evaluate(rebuilt, val_loader) <= 1.0 + 1e-9  # judged on the model rebuilt from the file
    assert result.report["stages"][0]["config"]["max_accuracy_drop"] == pytest.approx(1.0)


def test_a_missed_recipe_budget_is_reported_and_strict_writes_nothing(trained, tmp_path):
    train_loader, val_loader = loaders()
    calls = []

    def drifting(model):  # a user metric that reads 1.5 points lower after the first (baseline) call
        calls.append(1)
        return evaluate(model, val_loader) - (0.0 if len(calls) == 1 else 1.5)

    recipe = {"name": "lossy", "max_accuracy_drop": 1.0, "stages": [{"type": "half"}]}
    kwargs = {"train_loader": train_loader, "eval_fn": drifting, "progress": False}
    result = edgeshrink.compress(trained, recipe, out=tmp_path / "loose", **kwargs)
    budget = result.report["budget"]
    assert budget["met"] is False and "NOT met" in budget["note"]
    assert budget["drop"] == pytest.approx(budget["baseline"] - budget["final"])
    assert budget["drop"] > 1.0
    calls.clear()
    with pytest.raises(BudgetError, match="recipe 'lossy'.*NOT met"):
        edgeshrink.compress(trained, recipe, out=tmp_path / "strict", strict=True, **kwargs)
    assert not (tmp_path / "strict").exists()


def test_quantize_with_a_budget_measures_no_sensitivity_when_every_layer_holds(trained, tmp_path):
    train_loader, val_loader = loaders()
    calls = []

    def counted(model):
        calls.append(1)
        return evaluate(model, val_loader)

    result = edgeshrink.compress(
        trained, "int8", train_loader=train_loader, eval_fn=counted, out=tmp_path / "q", progress=False
    )
    stage = result.report["stages"][0]
    assert result.report["budget"]["met"] is True
    assert all(row["status"] == "quantized" for row in stage["layers"])
    assert not any("sensitivity_drop" in row for row in stage["layers"])
    # baseline, stage start, the all-int8 check, the record, the rebuilt file: no evaluation per layer
    assert len(calls) <= 5
