"""What users hand compress that it cannot work with is refused in one line naming the fix, before any
work and with nothing written: each of these crashed inside a stage before (a probe of how users pass models
and data). And the ordinary variants that should just work do: a torch DataLoader, int32 labels."""

import pytest
import torch
from helpers import SmallNet, blobs, loaders
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgeshrink
from edgeshrink.errors import ConfigError
from edgeshrink.recipes import Recipe
from edgeshrink.stages.prune import PruneConfig
from edgeshrink.train import TrainConfig, evaluate, fit

ONE_EPOCH = Recipe(name="t", stages=[PruneConfig(sparsity=0.5, finetune=TrainConfig(epochs=1, lr=1e-3))])


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x, mask):
        return self.fc((x * mask).flatten(1))


def _cases():
    x, y = blobs(64)
    train, val = loaders()
    return {
        "generator": (SmallNet(), {"train_loader": (b for b in train), "val_loader": val}, "one-shot iterator"),
        "empty": (SmallNet(), {"train_loader": train, "val_loader": []}, "val_loader yields no batches"),
        "dict": (SmallNet(), {"val_loader": [{"x": x, "y": y}]}, r"a batch is a dict \(keys x, y\)"),
        "two inputs": (TwoInputs(), {"val_loader": [((x, x), y)]}, "inputs are a tuple, not one tensor"),
        "float64": (SmallNet().double(), {"val_loader": val}, "float32 model; its parameters are float64"),
        "scripted": (torch.jit.script(SmallNet()), {"val_loader": val}, "not a TorchScript module"),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_unusable_models_and_data_are_refused_before_any_work(case, tmp_path):
    model, loaders_, message = _cases()[case]
    with pytest.raises(ConfigError, match=message) as err:
        edgeshrink.compress(model, ONE_EPOCH, out=tmp_path, progress=False, **loaders_)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())


def test_a_dataloader_and_int32_labels_train_and_evaluate(tmp_path):
    torch.manual_seed(0)
    x, y = blobs()
    xv, yv = blobs(96, seed=1)
    model = SmallNet()
    fit(model, DataLoader(TensorDataset(x, y.int()), batch_size=32, shuffle=True), TrainConfig(epochs=2, lr=3e-3))
    val = DataLoader(TensorDataset(xv, yv.int()), batch_size=48)
    result = edgeshrink.compress(
        model.eval(), ONE_EPOCH, train_loader=DataLoader(TensorDataset(x, y.int()), batch_size=32), val_loader=val,
        out=tmp_path, progress=False,
    )  # fmt: skip
    assert result.report["container"]["accuracy"] == pytest.approx(evaluate(result.model, [(xv, yv)]))
    assert result.report["stages"][0]["history"][0]["epoch"] == 1


class TiedNet(nn.Module):
    """An input projection and an output layer that are one tensor (weight tying)."""

    def __init__(self):
        super().__init__()
        self.inp, self.out, self.head = nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False), nn.Linear(64, 3)
        self.out.weight = self.inp.weight

    def forward(self, x):
        return self.head(torch.relu(self.out(torch.relu(self.inp(x.flatten(1))))))


@pytest.mark.parametrize("recipe", ["int8", "deep-compression"])
def test_tied_weights_are_refused_by_stages_that_give_each_layer_its_own_grid(recipe, tmp_path):
    train, val = loaders()
    with pytest.raises(ConfigError, match=r"inp.weight and out.weight are one tensor \(weight tying\).*untie") as err:
        edgeshrink.compress(TiedNet(), recipe, train_loader=train, val_loader=val, out=tmp_path, progress=False)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())


def test_tied_weights_compress_in_float16_and_keep_the_tie(tmp_path):
    train, val = loaders()
    model = TiedNet()
    result = edgeshrink.compress(model, "fp16", train_loader=train, val_loader=val, out=tmp_path, progress=False)
    assert result.model.model.out.weight is result.model.model.inp.weight
    loaded = edgeshrink.load(tmp_path, model=TiedNet())
    x = blobs(8)[0]
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(loaded.model(x), result.model(x), rtol=0, atol=0)


def test_a_container_that_fails_its_own_check_is_not_left_behind(tmp_path, monkeypatch):
    import edgeshrink.pipeline.run as run

    def fails(*args, **kwargs):
        raise edgeshrink.EdgeshrinkError("the rebuilt model does not compute what the saved model computed")

    monkeypatch.setattr(run, "check_written", fails)
    train, val = loaders()
    with pytest.raises(edgeshrink.EdgeshrinkError, match="does not compute"):
        edgeshrink.compress(SmallNet(), ONE_EPOCH, train_loader=train, val_loader=val, out=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
