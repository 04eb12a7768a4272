import copy
import warnings

import numpy as np
import pytest
import torch
from helpers import GramNet, SmallNet, loaders
from torch import nn

import edgeshrink
from edgeshrink.architecture import Arch, build_architecture, dependency_graph, replay_channel_edits
from edgeshrink.artifact import Artifact
from edgeshrink.errors import ArchitectureMismatchError, ConfigError, ScopeError
from edgeshrink.io.storage import load_state
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.mac_count import count_macs
from edgeshrink.recipes import Recipe
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.stages.channel_groups import MacEstimator, classifier_name, find_groups, score_groups
from edgeshrink.stages.channels import ChannelsConfig
from edgeshrink.tasks.zoo import create_model, list_models, model_entry
from edgeshrink.train import TrainConfig, evaluate, fit

NO_TRAINING = TrainConfig(epochs=0)


def prune(model, shape, arch=None, batches=None, **settings):
    """Apply the channels stage without fine-tuning, channel counts unrounded unless `round_to` is given;
    returns (record, arch with the edits)."""
    settings.setdefault("round_to", 1)
    example = torch.zeros(1, *shape)
    ctx = StageContext(
        finetune=None,
        evaluate=None,
        example_input=example,
        batches=(lambda n: batches[:n]) if batches else None,
    )
    artifact = Artifact(model, Arch.parse(arch), example_input=example)
    after = apply_stage(artifact, ChannelsConfig(finetune=NO_TRAINING, **settings), ctx)
    assert after.model is model  # the stage edits the model in place
    return after.records[-1], after.arch


def out_channels(model):
    return {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)}


def onnx_outputs(model, x, path, dynamo):
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, verbose=False)
        else:  # the TorchScript exporter: the same graph for these models, 10x faster to run in tests
            torch.onnx.export(model, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_loses_30_percent_of_its_channels(name, tmp_path):
    torch.manual_seed(0)
    shape = model_entry(name).input_shape
    arch = {"model": name, "model_kwargs": {"num_classes": 10}}
    model = create_model(name, num_classes=10).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so a wrong channel mapping shows
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    before, macs_before = out_channels(model), count_macs(model, shape)
    graph = dependency_graph(model, shape)  # what the MAC search estimates for this allocation
    groups = find_groups(model, graph, [dict(model.named_modules())[classifier_name(model, shape)]])
    score_groups(model, graph, groups, "l1", None)
    originals = {g.root: g.channels for g in groups}
    estimate = MacEstimator(model, graph, shape)(groups, dict.fromkeys(originals, 0.3), originals)
    record, arch = prune(model, shape, arch, ratio=0.3)
    after = out_channels(model)
    for row in record.layers:  # every pruned group kept 70% of its channels (rounded)
        assert row["kept"] == row["channels"] - round(0.3 * row["channels"]) or row["kept"] == 1
        for layer in row["layers"]:
            assert after[layer] == row["kept"] and before[layer] == row["channels"]
    assert count_macs(model, shape) == estimate < macs_before
    classifier = list(after)[-1] if name != "squeezenet1_1" else "classifier"
    assert after[classifier] == before[classifier] == 10

    x = torch.randn(1, *shape)  # batch 1, as traced above: oneDNN reuses its kernels for the new shapes
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (1, 10) and torch.isfinite(expected).all()
    np.testing.assert_allclose(onnx_outputs(model, x, tmp_path / "m.onnx", dynamo=False), expected.numpy(), atol=1e-4)

    # the edit history rebuilds the pruned architecture from data alone: same shapes, same outputs
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rebuilt = load_state(build_architecture(arch), state, "test").eval()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        assert torch.equal(rebuilt(x), expected)


def test_dynamo_export_of_a_pruned_resnet_matches(tmp_path):
    model = create_model("resnet8", width=2).eval()
    prune(model, (1, 28, 28), ratio=0.3)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(onnx_outputs(model, x, tmp_path / "r.onnx", dynamo=True), expected, atol=1e-4)


def test_replay_over_several_steps_and_stages_gives_identical_models(tmp_path):
    torch.manual_seed(1)
    shape = (1, 28, 28)
    model = create_model("squeezenet1_1").eval()  # concatenations: the hardest index bookkeeping
    _, arch = prune(model, shape, {"model": "squeezenet1_1"}, ratio=0.4, steps=2)
    _, arch = prune(model, shape, arch, ratio=0.2, criterion="l1")  # a second stage appends its edits
    save_checkpoint(tmp_path / "c.pt", Artifact(model, arch))
    rebuilt = edgeshrink.load(tmp_path / "c.pt").model  # weights_only: the edits are plain data
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    with pytest.raises(ArchitectureMismatchError, match="does not have"):
        replay_channel_edits(create_model("resnet8"), arch.channels)


@pytest.mark.parametrize("round_to", [1, 8])
def test_mac_target_is_reached_closely_with_rounded_channel_counts(round_to):
    shape = (1, 28, 28)
    model = create_model("resnet8", width=2)
    macs0 = count_macs(model, shape)
    record, _ = prune(model, shape, target_macs_reduction=0.5, round_to=round_to)
    assert 0.47 * macs0 < count_macs(model, shape) <= 0.5 * macs0
    assert all(row["kept"] % round_to == 0 and row["kept"] < row["channels"] for row in record.layers)


def test_bn_scale_keeps_the_channels_with_the_largest_scales():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )
    gammas = torch.tensor([0.9, -0.1, 0.5, 0.05, -2.0, 0.3, 0.01, 1.2])
    model[1].weight.data.copy_(gammas)
    prune(model, (1, 8, 8), ratio=0.5, criterion="bn_scale")
    kept = torch.topk(gammas.abs(), 4).indices.sort().values
    assert torch.equal(model[1].weight.data, gammas[kept])
    assert model[0].out_channels == 4 and model[5].in_features == 4


def test_taylor_uses_gradients_and_needs_data():
    train, _ = loaders()
    batches = list(train)
    model = SmallNet()
    with pytest.raises(ConfigError, match="taylor.*train_loader"):
        prune(copy.deepcopy(model), (1, 8, 8), ratio=0.5, criterion="taylor")
    record, _ = prune(model, (1, 8, 8), batches=batches, ratio=0.5, criterion="taylor")
    assert model.conv.out_channels == 2 and model.fc1.out_features == 16
    assert all(p.grad is None for p in model.parameters())


def test_sensitivity_gives_each_group_the_largest_ratio_within_budget():
    torch.manual_seed(0)
    train, _ = loaders()
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=3, lr=3e-3), progress=None)
    batches = list(train)[:3]
    budget = 2.0
    record, _ = prune(copy.deepcopy(model), (1, 8, 8), batches=batches, mode="sensitivity", accuracy_budget=budget)
    for row in record.layers:
        curve = {float(r): d for r, d in row["sensitivity"].items()}
        removed = 1 - row["kept"] / row["channels"]
        allowed = [r for r in sorted(curve) if all(curve[q] <= budget for q in curve if q <= r)]
        assert removed == pytest.approx(max(allowed, default=0.0), abs=0.5 / row["channels"])
    # a MAC target in sensitivity mode searches the budget: more reduction needs a larger budget
    small, _ = prune(copy.deepcopy(model), (1, 8, 8), batches=batches, mode="sensitivity", target_macs_reduction=0.2)
    large, _ = prune(copy.deepcopy(model), (1, 8, 8), batches=batches, mode="sensitivity", target_macs_reduction=0.6)
    budget_of = [float(r.notes[-1].split("accuracy budget ")[1].split()[0]) for r in (small, large)]
    assert budget_of[0] <= budget_of[1]


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"scope": {"include": ["conv9"]}}, ScopeError, "'conv9' matches no layer"),
        ({"per_layer": {"layer9.conv": 0.5}}, ScopeError, "'layer9.conv' matches no selected layer"),
        ({"scope": {"exclude": ["conv", "fc1"]}}, ScopeError, "no channel group can be pruned"),
    ],
)
def test_unknown_layers_are_one_line_errors(settings, error, message):
    with pytest.raises(error, match=message) as err:
        prune(SmallNet(), (1, 8, 8), **settings)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("settings", [{"ratio": 1.0}, {"per_layer": {"conv": 1.0}}, {"target_macs_reduction": 1.0}])
def test_removing_every_channel_is_refused(settings):
    with pytest.raises(ConfigError, match="must be in \\[0, 1\\): 1.0 would remove every channel"):
        ChannelsConfig(**settings)
    with pytest.raises(ConfigError, match="would remove every channel"):
        parse_stage({"type": "channels", **settings})


def test_compress_with_channels_and_distillation_rebuilds_from_the_container(tmp_path):
    torch.manual_seed(0)
    train, val = loaders()
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=2, lr=3e-3), progress=None)
    finetune = TrainConfig(epochs=1, lr=1e-3, distill={"temperature": 2.0, "alpha": 0.5})
    recipe = Recipe(name="t", stages=[ChannelsConfig(ratio=0.5, finetune=finetune)])
    result = edgeshrink.compress(model, recipe, train_loader=train, val_loader=val, out=tmp_path, progress=False)
    stage = result.report["stages"][0]
    assert stage["edits"] and stage["history"][0]["epoch"] == 1
    assert result.report["arch"]["channels"]["edits"] == stage["edits"]
    assert stage["parameters"] < result.report["baseline"]["parameters"]
    restored = edgeshrink.unpack(result.path, SmallNet())  # a fresh unpruned instance: the edits are replayed
    assert evaluate(restored, val) == result.report["container"]["accuracy"] == evaluate(result.model, val)


def test_a_model_whose_only_group_feeds_a_recurrent_layer_is_a_one_line_refusal():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(8, 16, 3, padding=1)
            self.norm = nn.LayerNorm(16)
            self.gru = nn.GRU(16, 24, batch_first=True)
            self.head = nn.Linear(24, 4)

        def forward(self, x):
            h, _ = self.gru(self.norm(torch.relu(self.conv(x)).transpose(1, 2)))
            return self.head(h[:, -1])

    with pytest.raises(edgeshrink.EdgeshrinkError, match="fixed.*GRU.*prune stage") as err:
        prune(Recurrent(), (8, 20), ratio=0.3)
    assert "\n" not in str(err.value)


def test_a_step_over_the_accuracy_budget_is_undone(tmp_path):
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    model = SmallNet()
    fit(model, train_loader, TrainConfig(epochs=4, lr=3e-3))
    model.eval()
    example = val_loader.inputs[:1]
    ctx = StageContext(finetune=None, evaluate=lambda m: evaluate(m, val_loader), example_input=example)
    start = evaluate(model, val_loader)
    settings = {"ratio": 0.9, "steps": 2, "round_to": 1, "finetune": NO_TRAINING}
    lossy = apply_stage(Artifact(copy.deepcopy(model), example_input=example), ChannelsConfig(**settings), ctx)
    lost = start - evaluate(lossy.model, val_loader)
    assert lost > 0.5, "the test needs a setting whose last step loses accuracy"
    budget = lost / 2
    config = ChannelsConfig(max_accuracy_drop=budget, **settings)
    held = apply_stage(Artifact(copy.deepcopy(model), example_input=example), config, ctx)
    record = held.records[-1]
    assert start - evaluate(held.model, val_loader) <= budget + 1e-9  # measured on the model returned
    assert record.budget_met is True and any("is undone" in n for n in record.notes)
    assert len(record.edits) < len(lossy.records[-1].edits)  # fewer channels removed than without the budget
    rebuilt = edgeshrink.load(edgeshrink.save(held, tmp_path / "c.eshrink").path, SmallNet())
    with torch.no_grad():
        assert torch.equal(rebuilt.model(val_loader.inputs), held.model(val_loader.inputs))


def test_a_model_torch_pruning_cannot_trace_is_a_one_line_refusal_naming_the_layer():
    class BiLstm(nn.Module):  # torch-pruning's concatenation mapping fails inside a bidirectional 2-layer LSTM
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True, bidirectional=True)
            self.norm = nn.LayerNorm(24)
            self.head = nn.Linear(24, 4)

        def forward(self, x):
            h, _ = self.lstm(x)
            return self.head(self.norm(h.mean(1)))

    with pytest.raises(edgeshrink.EdgeshrinkError, match="cannot trace.*LSTM.*prune stage") as err:
        prune(BiLstm(), (20, 8), ratio=0.3)
    assert "\n" not in str(err.value)


def test_a_channel_split_torch_pruning_cannot_follow_is_left_whole_and_the_rest_is_pruned():
    class Gated(nn.Module):  # F.glu halves conv's 16 outputs: torch-pruning maps them onto norm's 8 channels
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 3, padding=1)
            self.norm = nn.BatchNorm2d(8)
            self.mid = nn.Conv2d(8, 16, 3, padding=1)
            self.last = nn.Conv2d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            h = self.norm(nn.functional.glu(self.conv(x), dim=1))
            h = torch.relu(self.last(torch.relu(self.mid(h))))
            return self.head(h.mean((2, 3)))

    torch.manual_seed(0)
    model = Gated().eval()
    graph = dependency_graph(model, (1, 8, 8))
    found = {g.root for g in find_groups(model, graph, [model.head])}
    assert "conv" not in found and {"mid", "last"} <= found
    x = torch.randn(4, 1, 8, 8)
    prune(model, (1, 8, 8), ratio=0.5)
    assert out_channels(model)["conv"] == 16 and out_channels(model)["mid"] == 8 == out_channels(model)["last"]
    assert model(x).shape == (4, 4)


def test_a_forward_that_writes_a_width_as_a_number_is_refused_naming_its_line():
    class FixedView(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 3, padding=1)
            self.squeeze, self.excite = nn.Linear(16, 4), nn.Linear(4, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h.mean((2, 3))))))
            return self.head((h * gate.view(-1, 16, 1, 1)).mean((2, 3)))  # 16: the width, as a number

    with pytest.raises(edgeshrink.EdgeshrinkError, match=r"no longer runs.*test_channels\.py:\d+.*x\.shape\[1\]") as e:
        prune(FixedView(), (1, 8, 8), ratio=0.5)
    assert "\n" not in str(e.value)


def test_a_matmul_between_activations_is_left_whole_and_the_rest_is_pruned():
    torch.manual_seed(0)
    model = GramNet().eval()
    graph = dependency_graph(model, (1, 8, 8))
    found = {g.root for g in find_groups(model, graph, [model.head])}
    assert found == {"first"}  # the groups through the matmul are skipped, not followed until memory runs out
    x = torch.randn(4, 1, 8, 8)
    prune(model, (1, 8, 8), ratio=0.5)
    assert out_channels(model)["first"] == 8 and out_channels(model)["stem"] == 16 == out_channels(model)["key"]
    assert model(x).shape == (4, 4)
