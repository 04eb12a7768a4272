"""A fine-tune whose loss diverges is retried from the weights before it at half the learning rate."""

import pytest
import torch
from torch import nn

from edgeshrink.errors import TrainingDivergedError
from edgeshrink.pipeline.context import fit_backing_off, frozen_teacher, make_context
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import Progress, TrainConfig


class FakeTrainer:
    """Diverges (weights wrecked, then the error fit raises) above `limit`; else adds one to every weight."""

    def __init__(self, model: nn.Module, limit: float) -> None:
        self.model, self.limit, self.starts, self.rates = model, limit, [], []

    def __call__(self, cfg: TrainConfig) -> list[dict]:
        self.starts.append({k: v.clone() for k, v in self.model.state_dict().items()})
        self.rates.append(cfg.lr)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(float("nan") if cfg.lr > self.limit else 1.0)
        if cfg.lr > self.limit:
            raise TrainingDivergedError("the loss became nan")
        return [{"epoch": 1, "loss": 0.5}]


def test_each_retry_starts_from_the_weights_before_the_fine_tune_at_half_the_rate():
    model = nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = FakeTrainer(model, limit=0.03)
    history = fit_backing_off(model, TrainConfig(lr=0.2), trainer, "prune 1/3", Progress(False))
    assert trainer.rates == [0.2, 0.1, 0.05, 0.025]
    for start in trainer.starts:
        for key, value in before.items():
            assert torch.equal(start[key], value)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key] + 1.0)
    assert history == [{"epoch": 1, "loss": 0.5, "lr": 0.025, "diverged_at_lr": [0.2, 0.1, 0.05]}]


def test_a_fine_tune_that_does_not_diverge_is_untouched():
    model = nn.Linear(3, 2)
    trainer = FakeTrainer(model, limit=1.0)
    assert fit_backing_off(model, TrainConfig(lr=0.2), trainer, "share", Progress(False)) == [{"epoch": 1, "loss": 0.5}]
    assert trainer.rates == [0.2]


def test_the_pipeline_gives_up_after_the_retries_with_the_weights_restored():
    model = nn.Sequential(nn.Linear(4, 3))
    inputs = torch.randn(32, 4)
    inputs[5, 2] = float("inf")  # a bad example: every rate diverges
    loader = TensorLoader(inputs, torch.randint(0, 3, (32,)), 8)
    ctx = make_context(
        train_loader=loader,
        val_loader=None,
        train_fn=None,
        eval_fn=None,
        calibration_loader=None,
        progress=Progress(False),
        teacher=frozen_teacher(model),
        seed=0,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match=r"diverged at learning rates 0\.08, 0\.04, 0\.02, 0\.01"):
        ctx.finetune(model, TrainConfig(epochs=1, optimizer="sgd", lr=0.08), "prune 1/1")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


class SqrtAtZero(nn.Module):
    """sqrt(|fc(x)|) with fc all zeros: the loss is finite, the gradient at 0 is not (inf x 0 = nan)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return torch.sqrt(self.fc(x).abs())


def test_weights_ruined_on_the_last_step_with_a_finite_loss_are_a_divergence():
    from edgeshrink.train import fit

    model = SqrtAtZero()
    loader = TensorLoader(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), 4)  # one step: no later loss to see it
    with pytest.raises(TrainingDivergedError, match="fc.weight became nan or inf"):
        fit(model, loader, TrainConfig(epochs=1, optimizer="sgd", lr=0.1), progress=Progress(False))
