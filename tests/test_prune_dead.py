"""The prune stage's dead_units = "respend": no kept weight feeds a unit nothing reads, the layer keeps its
count, the weights it keeps are the largest live ones, and a unit read by an op the dependency graph
cannot see is left alone."""

import re

import pytest
import torch
from helpers import GramNet
from torch import nn

from edgeshrink.artifact import Artifact
from edgeshrink.errors import ConfigError
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.stages.prune_dead import find_readers
from edgeshrink.weights import get_mask


class Mlp(nn.Module):
    def __init__(self, hidden_mix: bool = False):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 64), nn.Linear(64, 32), nn.Linear(32, 4)
        self.hidden_mix = hidden_mix

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        out = self.fc3(torch.relu(self.fc2(h)))
        # a path the dependency graph takes for elementwise: every hidden unit reaches the outputs
        return out + h.pow(2).sum(1, keepdim=True) if self.hidden_mix else out


def _prune(model: nn.Module, dead_units: str, sparsity: float = 0.95) -> Artifact:
    settings = {"method": "sparsity", "sparsity": sparsity, "dead_units": dead_units, "finetune": {"epochs": 0}}
    cfg = parse_stage({"type": "prune", **settings})
    ctx = StageContext(finetune=None, evaluate=None, example_input=torch.zeros(1, 16))
    return apply_stage(Artifact(model), cfg, ctx)


def _unread(model: nn.Module, layer: str, reader: str) -> torch.Tensor:
    return ~(getattr(model, reader).weight.detach() != 0).any(0)


def test_respend_moves_weights_from_unread_units_and_keeps_counts():
    torch.manual_seed(0)
    plain, respent = Mlp(), Mlp()
    respent.load_state_dict(plain.state_dict())
    dense = {n: getattr(plain, n).weight.detach().clone() for n in ("fc1", "fc2", "fc3")}
    _prune(plain, "keep")
    artifact = _prune(respent, "respend")
    wasted = int(get_mask(plain.fc1)[_unread(plain, "fc1", "fc2")].sum())
    assert wasted > 0  # the case the option exists for: plain magnitude pruning keeps weights into unread units
    for layer, reader in (("fc1", "fc2"), ("fc2", "fc3")):
        kept = get_mask(getattr(respent, layer))
        assert int(kept.sum()) == int(get_mask(getattr(plain, layer)).sum())  # same count
        dead = _unread(respent, layer, reader)
        assert not kept[dead].any()  # nothing kept into a unit no reader has a weight on
        # the kept weights are the largest of the live units' (torch oracle: top-k outside the dead rows)
        live = dense[layer].abs().clone()
        live[dead] = -1
        expected = torch.zeros_like(kept).reshape(-1)
        expected[torch.topk(live.reshape(-1), int(kept.sum())).indices] = True
        assert torch.equal(kept, expected.reshape(kept.shape))
    assert torch.equal(get_mask(respent.fc3), get_mask(plain.fc3))  # the classifier's outputs are all read
    unread = int(_unread(respent, "fc1", "fc2").sum())
    assert f"fc1 {unread} of 64" in " ".join(artifact.records[-1].notes)


def test_emptying_unread_units_leaves_the_function_unchanged():
    torch.manual_seed(1)
    model = Mlp()
    _prune(model, "respend", sparsity=0.97)
    x = torch.randn(64, 16)
    before = model(x)
    dead = _unread(model, "fc1", "fc2")
    with torch.no_grad():
        model.fc1.bias[dead] = torch.randn(int(dead.sum())) * 100  # an unread unit may hold anything
    assert dead.any() and torch.equal(model(x), before)


def test_a_unit_read_by_an_op_the_graph_cannot_see_is_left_alone():
    torch.manual_seed(0)
    plain, mixed = Mlp(), Mlp(hidden_mix=True)
    mixed.load_state_dict(plain.state_dict())
    _prune(plain, "keep")
    artifact = _prune(mixed, "respend")
    note = " ".join(artifact.records[-1].notes)
    assert re.search(r"dead units: fc1\b.* reach the outputs other than through fc2", note)
    assert torch.equal(get_mask(mixed.fc1), get_mask(plain.fc1))  # fc1's hidden units are all read by the sum


def test_respend_needs_the_sparsity_method():
    with pytest.raises(ConfigError, match="dead_units 'respend' applies to method 'sparsity'"):
        parse_stage({"type": "prune", "method": "threshold", "dead_units": "respend"})


def test_a_model_the_dependency_graph_cannot_trace_is_pruned_as_usual_with_a_note(monkeypatch):
    import edgeshrink.stages.prune_dead as dead

    def untraceable(*_args, **_kw):
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(dead, "dependency_graph", untraceable)
    torch.manual_seed(0)
    plain, respent = Mlp(), Mlp()
    respent.load_state_dict(plain.state_dict())
    _prune(plain, "keep")
    artifact = _prune(respent, "respend")
    assert "torch-pruning cannot trace this model (RuntimeError); none respent" in " ".join(artifact.records[-1].notes)
    for layer in ("fc1", "fc2", "fc3"):
        assert torch.equal(get_mask(getattr(respent, layer)), get_mask(getattr(plain, layer)))


def test_units_coupled_through_a_matmul_between_activations_are_left_alone():
    """The dead-unit search follows each pruned layer's group: through a Gram matrix torch-pruning's mapping
    never settles (it ran out of memory), so those layers get no readers and only `first`, read by `stem`, does."""
    model = GramNet().eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    found = find_readers(model, layers, (1, 8, 8))
    assert [(r.writers, [name for name, _, _ in r.reads]) for r in found] == [(["first"], ["stem"])]


class Shuffled(nn.Module):
    """16 channels become 4 through a pixel shuffle, which torch-pruning takes for elementwise: it maps the
    stem's 16 units onto the conv's input channels 0-15, and the conv has 4."""

    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.head = nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(4, 8, 3, 2, 1), nn.Linear(512, 4)

    def forward(self, x):
        return self.head(torch.relu(self.conv(torch.pixel_shuffle(torch.relu(self.stem(x)), 2))).flatten(1))


def test_units_mapped_onto_channels_a_reader_does_not_have_are_left_alone():
    """An operation that changes the channel count (pixel shuffle) gives torch-pruning's mapping indices beyond
    the reader's inputs; the dead-unit search leaves that group alone instead of crashing (IndexError) on it."""
    model = Shuffled().eval()
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    found = find_readers(model, layers, (1, 8, 8))
    for r in found:
        for reader, channels, units in r.reads:
            assert int(channels.max()) < model.get_submodule(reader).weight.shape[1]
            assert int(units.max()) < r.units
    assert "stem" not in [w for r in found for w in r.writers]
    settings = {"method": "sparsity", "sparsity": 0.9, "dead_units": "respend", "finetune": {"epochs": 0}}
    ctx = StageContext(finetune=None, evaluate=None, example_input=torch.zeros(1, 1, 8, 8))
    artifact = apply_stage(Artifact(model), parse_stage({"type": "prune", **settings}), ctx)
    assert get_mask(model.stem).float().mean() == pytest.approx(0.1, abs=0.01)  # pruned as usual
    assert artifact.model(torch.randn(2, 1, 8, 8)).shape == (2, 4)
