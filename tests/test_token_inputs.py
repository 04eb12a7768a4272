"""Models whose input is integer token ids (an Embedding first), as text and keyword models are: the stages
that trace the model with a made-up input (torch-pruning's dependency graph, MAC counts, the dead-unit
probe) feed ids, not floats, and a pruned model's channel edits replay on a fresh instance."""

import pytest
import torch
from helpers import smallest
from torch import nn

import edgeshrink
from edgeshrink.example_inputs import InputShape, zero_input
from edgeshrink.mac_count import count_macs
from edgeshrink.recipes import Recipe, load_recipe
from edgeshrink.stages.channels import ChannelsConfig
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import TrainConfig, evaluate, fit

VOCAB, LENGTH = 40, 10


class TokenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 24)
        self.fc1 = nn.Linear(24, 64)
        self.fc2 = nn.Linear(64, 64)
        self.head = nn.Linear(64, 3)

    def forward(self, ids):
        h = self.emb(ids).mean(1)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(h)))))


def token_data(n, seed):
    """Three classes: which third of the vocabulary most ids come from."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    ids = labels[:, None] * (VOCAB // 3) + torch.randint(0, VOCAB // 3, (n, LENGTH), generator=g)
    noise = torch.rand(n, LENGTH, generator=g) < 0.3
    return torch.where(noise, torch.randint(0, VOCAB, (n, LENGTH), generator=g), ids), labels


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    x, y = token_data(512, 0)
    xv, yv = token_data(256, 1)
    train, val = TensorLoader(x, y, 64, shuffle=True), TensorLoader(xv, yv, 256)
    model = TokenNet()
    fit(model, train, TrainConfig(epochs=4, optimizer="adam", lr=3e-3))
    return model.eval(), train, val


def test_a_zero_input_has_the_inputs_dtype():
    ids = InputShape.of(torch.zeros(2, LENGTH, dtype=torch.int64))
    assert ids == (LENGTH,) and ids.dtype == torch.int64 and ids.dtype_name == "int64"
    assert zero_input(TokenNet(), ids, 3).dtype == torch.int64
    assert InputShape.of(torch.zeros(2, 3)).dtype is None  # a float input takes the model's dtype
    assert zero_input(TokenNet().half(), (LENGTH,)).dtype == torch.float16
    dense = sum(m.in_features * m.out_features for m in TokenNet().modules() if isinstance(m, nn.Linear))
    assert count_macs(TokenNet(), ids) == dense  # the Embedding is a lookup, no MACs


def test_channels_on_a_token_model_records_the_input_dtype_and_replays(trained, tmp_path):
    model, train, val = trained
    stage = ChannelsConfig(ratio=0.5, max_accuracy_drop=100.0, finetune=TrainConfig(epochs=1, lr=1e-3))
    result = edgeshrink.compress(
        model, Recipe(name="t", stages=[stage]), train_loader=train, val_loader=val, out=tmp_path, progress=False
    )
    channels = result.report["arch"]["channels"]
    assert channels["edits"] and channels["input_dtype"] == "int64"
    assert result.report["stages"][0]["parameters"] < result.report["baseline"]["parameters"]
    restored = edgeshrink.unpack(result.path, TokenNet())  # a fresh instance: the edits replay on zero ids
    ids = val.inputs[:64]
    with torch.no_grad():
        torch.testing.assert_close(restored(ids), result.model(ids))


def test_deep_compression_max_respends_dead_units_of_a_token_model(trained, tmp_path):
    model, train, val = trained
    result = edgeshrink.compress(
        model, smallest(load_recipe("deep-compression-max")), train_loader=train, val_loader=val, out=tmp_path,
        progress=False,
    )  # fmt: skip
    assert result.report["budget"]["final"] == pytest.approx(evaluate(result.model, val))
    loaded = edgeshrink.load(tmp_path, model=TokenNet())
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(val.inputs), result.model(val.inputs))
