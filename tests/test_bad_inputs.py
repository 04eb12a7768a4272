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
