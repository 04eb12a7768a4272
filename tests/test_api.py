import json

import pytest
import torch
from helpers import SmallNet, loaders

import edgeshrink
from edgeshrink.errors import ConfigError
from edgeshrink.train import evaluate
from edgeshrink.weights import get_mask


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = SmallNet()
    train_loader, val_loader = loaders()
    from edgeshrink.train import TrainConfig, fit

    fit(model, train_loader, TrainConfig(epochs=3, lr=3e-3))
    return model


def test_compress_own_model_with_loaders(trained, tmp_path, tiny_recipe):
    train_loader, val_loader = loaders()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    result = edgeshrink.compress(
        trained, tiny_recipe, train_loader=train_loader, val_loader=val_loader, out=tmp_path / "run", progress=False
    )
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())  # input untouched
    fresh = edgeshrink.unpack(result.path, SmallNet())
    x = val_loader.inputs
    assert torch.equal(fresh(x), result.model(x))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["container"]["bytes"] == result.path.stat().st_size
    assert report["container"]["accuracy"] == pytest.approx(evaluate(fresh, val_loader))
    assert [s["stage"] for s in report["stages"]] == ["prune", "share"]
    assert [r["stage"] for r in report["stage_ratios"]][-1] == "encode"
    assert report["container"]["ratio"] == pytest.approx(report["baseline"]["dense_bytes"] / result.path.stat().st_size)
    kept = report["layers"]["total"]["kept_percent"]
    assert kept == pytest.approx(
        100
        * sum(int(get_mask(m).sum()) for m in (result.model.conv, result.model.fc1, result.model.fc2))
        / sum(m.weight.numel() for m in (result.model.conv, result.model.fc1, result.model.fc2))
    )
    assert (tmp_path / "run" / "layers.md").read_text().startswith("| Layer")


def test_compress_with_users_train_fn(trained, tmp_path, tiny_recipe):
    calls = []

    def train_fn(model, epochs):
        calls.append(epochs)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        for x, y in loaders()[0]:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    result = edgeshrink.compress(trained, tiny_recipe, train_fn=train_fn, out=tmp_path / "run", progress=False)
    assert calls == [1, 1, 1]  # two pruning rounds, one centroid fine-tuning
    assert result.report["container"]["accuracy"] is None  # nothing to measure with: said, not invented
    w = result.model.fc1.weight
    assert torch.all(w[~get_mask(result.model.fc1)] == 0)


def test_both_loaders_and_train_fn_is_an_error(trained, tmp_path, tiny_recipe):
    with pytest.raises(ConfigError, match="not both"):
        edgeshrink.compress(
            trained,
            tiny_recipe,
            train_loader=loaders()[0],
            train_fn=lambda m, e: None,
            out=tmp_path / "x",
            progress=False,
        )


def test_divergence_is_reported_not_trained_through():
    from edgeshrink.errors import TrainingDivergedError
    from edgeshrink.train import TrainConfig, fit

    model = SmallNet()
    with torch.no_grad():
        model.fc2.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="Lower the learning rate"):
        fit(model, loaders()[0], TrainConfig(epochs=1))


class TwoOutputs(SmallNet):
    """Logits and the features before them: evaluation and every exported file read one output."""

    def forward(self, x):
        logits = super().forward(x)
        return {"logits": logits, "features": torch.relu(self.conv(x)).mean((2, 3))}


def test_a_model_with_several_outputs_is_refused_before_any_work(tmp_path):
    train_loader, val_loader = loaders()
    with pytest.raises(ConfigError, match=r"returns a dict of 2 outputs, not one tensor.*wrap it") as err:
        edgeshrink.compress(
            TwoOutputs(), "int8", train_loader=train_loader, val_loader=val_loader, out=tmp_path / "run", progress=False
        )
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="not one tensor"):
        edgeshrink.export(TwoOutputs(), tmp_path / "m.onnx", example_input=torch.zeros(1, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


class TokenMixer(torch.nn.Module):
    """A Linear on a transposed (non-contiguous) 3-D input, then a batched matmul with the input: torch.matmul
    folds the 3-D input one way when the weight requires grad and another way when it does not."""

    def __init__(self):
        super().__init__()
        self.conv, self.p, self.fc = (
            torch.nn.Conv2d(1, 16, 3, padding=1),
            torch.nn.Linear(16, 8),
            torch.nn.Linear(128, 3),
        )

    def forward(self, x):
        t = torch.relu(self.conv(x)).flatten(2)  # (N, 16, 64)
        mixed = torch.bmm(self.p(t.transpose(1, 2)).transpose(1, 2), t.transpose(1, 2)) / 64  # (N, 8, 16)
        return self.fc(mixed.flatten(1))


def test_a_pruned_model_whose_kernels_depend_on_requires_grad_is_checked_on_equal_terms(tmp_path, tiny_recipe):
    """compress rebuilds the model from its file and requires it to compute exactly what the compressed model
    does. A masked weight (computed, no grad) and the same weight loaded as a parameter (requires grad) sent
    this model's Linear down two summation orders, and compress refused its own file as an internal error.
    Oracle: the reloaded model's outputs against the compressed model's, bit for bit."""
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    result = edgeshrink.compress(
        TokenMixer(),
        tiny_recipe,
        train_loader=train_loader,
        val_loader=val_loader,
        out=tmp_path / "run",
        progress=False,
    )
    fresh = edgeshrink.load(result.path, model=TokenMixer())
    assert all(p.requires_grad for p in fresh.model.parameters())  # the flags are back: the model can be trained
    with torch.no_grad():
        for p in fresh.model.parameters():
            p.requires_grad_(False)
        assert torch.equal(fresh.model(val_loader.inputs), result.model(val_loader.inputs))
