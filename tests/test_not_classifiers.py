"""Models that are not classifiers (a regression head): loaders with float targets are refused before any
work, since top-1 on them would be a number that means nothing; with the user's eval_fn and train_fn every
recipe runs, including the ones whose stages distil (the user's loop has its own loss: said in the record)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import smallest
from torch import nn

import edgeshrink
from edgeshrink.batch_checks import require_class_labels
from edgeshrink.errors import ConfigError
from edgeshrink.recipes import load_recipe
from edgeshrink.tasks.data import TensorLoader


def regression_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (2 * x[:, :1] - x[:, 1:2] * x[:, 2:3]).clone()


@pytest.fixture(scope="module")
def regressor():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    x, y = regression_data(512, 0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def test_class_labels_are_checked_against_the_outputs():
    logits = torch.zeros(4, 3)
    require_class_labels(logits, torch.tensor([0, 2, 1, 0]), "t")
    require_class_labels(torch.zeros(2, 3, 5, 5), torch.zeros(2, 5, 5, dtype=torch.int64), "t")  # per pixel
    for labels in (torch.zeros(4, 1), torch.tensor([0, 3, 1, 0]), torch.zeros(4, 2, dtype=torch.int64)):
        with pytest.raises(ConfigError, match="eval_fn=.*train_fn="):
            require_class_labels(logits, labels, "t")


def test_regression_targets_in_the_loaders_are_refused_before_anything_is_written(regressor, tmp_path):
    model, x, y = regressor
    loader = TensorLoader(x, y, 64)
    with pytest.raises(ConfigError, match=r"float32 labels of shape \(64, 1\).*eval_fn="):
        edgeshrink.compress(model, "int8", train_loader=loader, val_loader=loader, out=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("recipe", ["int8-qat", "w4a8"])
def test_a_distilling_recipe_runs_the_users_loop_and_says_distillation_was_not_applied(regressor, recipe, tmp_path):
    model, x, y = regressor
    xv, yv = regression_data(256, 1)
    calls = []

    def train_fn(m, epochs):
        calls.append(epochs)
        opt = torch.optim.Adam(m.parameters(), 1e-3)
        for _ in range(epochs * 8):
            opt.zero_grad()
            F.mse_loss(m(x), y).backward()
            opt.step()

    def eval_fn(m):  # higher is better: 100 minus the mean squared error in percent of the targets' variance
        with torch.no_grad():
            return 100.0 - 100.0 * float(F.mse_loss(m(xv), yv) / yv.var())

    cfg = smallest(load_recipe(recipe))
    result = edgeshrink.compress(
        model, cfg, train_fn=train_fn, eval_fn=eval_fn, calibration_loader=TensorLoader(x, y, 64), out=tmp_path,
        progress=False,
    )  # fmt: skip
    assert calls and all(e >= 1 for e in calls)
    records = [r for stage in result.report["stages"] for r in stage["history"]]
    assert records and all("not applied" in r["distill"] for r in records)
    assert result.report["budget"]["final"] == pytest.approx(eval_fn(result.model))
