"""A user's model with training reparametrizations (weight_norm as TCNs and audio models use it, the older
hook-based weight_norm, spectral_norm, orthogonal): folded into plain weights computing the same outputs,
compressed by every kind of stage, and loaded back into a fresh instance that still carries them."""

import pytest
import torch
from helpers import smallest
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import edgeshrink
from edgeshrink.recipes import load_recipe
from edgeshrink.reparametrizations import fold_reparametrizations, folded_copy, foreign_parametrizations
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import TrainConfig, fit


class TCN(nn.Module):
    """Dilated causal Conv1d blocks with weight_norm, a residual, a Linear head."""

    def __init__(self, hooked: bool = False):
        super().__init__()
        norm = torch.nn.utils.weight_norm if hooked else parametrizations.weight_norm
        self.c1 = norm(nn.Conv1d(2, 16, 3, dilation=1))
        self.c2 = norm(nn.Conv1d(16, 16, 3, dilation=2))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.c1(nn.functional.pad(x, (2, 0))))
        h = torch.relu(self.c2(nn.functional.pad(h, (4, 0)))) + h
        return self.head(h.mean(2))


def signals(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    t = torch.arange(32) / 32
    wave = torch.sin(2 * torch.pi * (labels[:, None] + 1) * t)
    return torch.stack([wave, -wave], 1) + 0.3 * torch.randn(n, 2, 32, generator=g), labels


@pytest.fixture(scope="module")
def data():
    x, y = signals(384, 0)
    xv, yv = signals(192, 1)
    return TensorLoader(x, y, 64, shuffle=True), TensorLoader(xv, yv, 192)


def _kinds(model):
    return sorted(found.kind for found in foreign_parametrizations(model))


@pytest.mark.parametrize("hooked", [False, True], ids=["parametrize", "hook"])
def test_folding_keeps_the_function_and_leaves_the_callers_model_alone(hooked):
    torch.manual_seed(0)
    model = TCN(hooked)
    model.head = parametrizations.orthogonal(nn.Linear(16, 3))
    model.c0 = parametrizations.spectral_norm(nn.Linear(4, 4))  # another kind, unused by forward
    x = torch.randn(5, 2, 32)
    with torch.no_grad():
        expected = model.eval()(x)
    folded, _, notes = folded_copy(model)
    assert len(notes) == 4 and not foreign_parametrizations(folded)
    assert all(type(m.weight) is nn.Parameter for m in (folded.c1, folded.c2, folded.head, folded.c0))
    assert not any(parametrize.is_parametrized(m) or m._forward_pre_hooks for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), expected)
        torch.testing.assert_close(model(x), expected)  # the caller's model keeps its reparametrizations
    assert len(_kinds(model)) == 4 and "orthogonal" in _kinds(model)


def test_a_model_without_reparametrizations_is_not_copied():
    model = nn.Linear(3, 2)
    assert folded_copy(model) == (model, None, []) and fold_reparametrizations(model) == []


@pytest.mark.parametrize("recipe", ["deep-compression", "int8", "channels", "lottery"])
def test_a_weight_norm_model_compresses_and_loads_into_a_fresh_instance(recipe, data, tmp_path):
    train, val = data
    torch.manual_seed(0)
    model = TCN()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
    cfg = smallest(load_recipe(recipe))
    rewind = init if recipe == "lottery" else None
    result = edgeshrink.compress(
        model.eval(), cfg, train_loader=train, val_loader=val, out=tmp_path, progress=False, rewind_weights=rewind
    )
    assert len(result.report["baseline"]["reparametrizations_folded"]) == 2
    loaded = edgeshrink.load(tmp_path, model=TCN())  # weight_norm on the fresh instance is folded too
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(val.inputs), result.model(val.inputs))
    assert foreign_parametrizations(model)  # the caller's model is untouched
