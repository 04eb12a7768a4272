"""Lottery tickets: iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020). The oracle
for a rewind is the state it rewinds to; for the geometric schedule, (1 - s)^(i/n) of each layer's weights; for the
snapshot of training step k, the same training stopped after k steps."""

import copy
import itertools

import pytest
import torch
from helpers import SmallNet, cli, loaders

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.errors import ConfigError
from edgeshrink.stages.base import StageContext, apply_stage
from edgeshrink.stages.prune import PruneConfig
from edgeshrink.train import Progress, TrainConfig, WeightSnapshot, fit
from edgeshrink.weights import get_mask, rewind_to

NO_TRAINING = TrainConfig(epochs=0)


def _fresh(seed=0):
    torch.manual_seed(seed)
    return SmallNet()


def _trained(init_model):
    model = copy.deepcopy(init_model)
    fit(model, loaders()[0], TrainConfig(epochs=3, lr=3e-3), progress=Progress(False))
    return model.eval()


def test_each_round_rewinds_the_kept_weights_and_everything_else_to_the_given_state():
    init = _fresh()
    state = {k: v.clone() for k, v in init.state_dict().items()}
    trained = _trained(init)
    cfg = PruneConfig(method="sparsity", sparsity=0.5, iterations=2, schedule="geometric", rewind="init",
                      finetune=NO_TRAINING)  # fmt: skip
    ctx = StageContext(None, None, rewind_weights=state)
    out = apply_stage(Artifact(copy.deepcopy(trained)), cfg, ctx).model
    for name in ("conv", "fc1", "fc2"):
        module = getattr(out, name)
        mask = get_mask(module)
        assert mask is not None and 0 < mask.float().mean() < 1
        assert torch.equal(module.weight, torch.where(mask, state[f"{name}.weight"], torch.zeros(())))
        assert torch.equal(module.bias, state[f"{name}.bias"])


def test_masks_come_from_the_trained_weights_not_the_rewound_ones():
    init = _fresh()
    state = {k: v.clone() for k, v in init.state_dict().items()}
    trained = _trained(init)
    cfg = PruneConfig(method="sparsity", sparsity=0.7, iterations=1, rewind="init", finetune=NO_TRAINING)
    out = apply_stage(Artifact(copy.deepcopy(trained)), cfg, StageContext(None, None, rewind_weights=state)).model
    w = trained.fc1.weight.detach().abs().reshape(-1)
    expected = torch.zeros_like(w, dtype=torch.bool)
    expected[torch.topk(w, round(w.numel() * 0.3)).indices] = True
    assert torch.equal(get_mask(out.fc1).reshape(-1), expected)


@pytest.mark.parametrize("rounds", [1, 3, 5])
def test_the_geometric_schedule_removes_the_same_fraction_of_the_remaining_weights_each_round(rounds):
    model = _trained(_fresh())
    cfg = PruneConfig(method="sparsity", sparsity=1 - 0.8**rounds, iterations=rounds, schedule="geometric",
                      per_layer={"fc2": 1 - 0.9**rounds}, finetune=NO_TRAINING)  # fmt: skip
    out = apply_stage(Artifact(model), cfg, StageContext(None, None)).model
    for name, rate in (("conv", 0.8), ("fc1", 0.8), ("fc2", 0.9)):
        numel = getattr(out, name).weight.numel()
        assert int(get_mask(getattr(out, name)).sum()) == round(numel * rate**rounds)


def test_geometric_needs_the_sparsity_method():
    with pytest.raises(ConfigError, match="geometric"):
        PruneConfig(method="threshold", schedule="geometric")


def test_the_snapshot_of_step_k_is_the_training_stopped_after_k_steps():
    init = _fresh()
    a, b = copy.deepcopy(init), copy.deepcopy(init)
    torch.manual_seed(1)
    snapshot = WeightSnapshot(a, 5)
    fit(a, loaders()[0], TrainConfig(epochs=2, lr=3e-3, schedule="constant"), after_step=snapshot.after_step,
        progress=Progress(False))  # fmt: skip
    torch.manual_seed(1)
    train, _ = loaders()
    stopped = list(itertools.islice(iter(train), 5))  # the first 5 batches the first run saw
    fit(b, stopped, TrainConfig(epochs=1, lr=3e-3, schedule="constant"), progress=Progress(False))
    for key, value in b.state_dict().items():
        assert torch.equal(snapshot.result()[key], value), key
    with pytest.raises(ConfigError, match="trained 6 steps"):
        late = WeightSnapshot(copy.deepcopy(init), 10_000)
        fit(late.model, loaders()[0], TrainConfig(epochs=1), after_step=late.after_step, progress=Progress(False))
        late.result()


def test_compress_refuses_a_rewind_without_weights_and_weights_without_a_rewind(trained):
    train, val = loaders()
    with pytest.raises(ConfigError, match="rewinds to the weights at initialisation"):
        edgeshrink.compress(trained, "lottery", train_loader=train, val_loader=val, progress=False)
    with pytest.raises(ConfigError, match="no stage of recipe 'int8' sets `rewind`"):
        edgeshrink.compress(trained, "int8", train_loader=train, rewind_weights=trained.state_dict(), progress=False)
    bad = {k: v for k, v in trained.state_dict().items() if k != "fc2.bias"}
    with pytest.raises(ConfigError, match="fc2.bias"):
        rewind_to(copy.deepcopy(trained), bad)


TINY_LOTTERY = """
name = "tiny-lottery"
[[stages]]
type = "prune"
method = "sparsity"
sparsity = 0.36
iterations = 2
schedule = "geometric"
rewind = "init"
[stages.finetune]
epochs = 1
"""


def test_the_lottery_recipe_runs_from_the_command_line_which_takes_the_initial_weights(tmp_path):
    recipe = tmp_path / "lottery.toml"
    recipe.write_text(TINY_LOTTERY)
    done = cli("compress", "--task", "digits-cnn", "--recipe", str(recipe), "--baseline-epochs", "1", "--out",
               str(tmp_path / "run"), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = edgeshrink.load(tmp_path / "run").report
    kept = [row["kept_percent"] for row in report["stages"][0]["layers"]]
    assert report["recipe"]["stages"][0]["rewind"] == "init" and len(kept) == 4
    assert all(abs(k - 64.0) < 1.0 for k in kept)  # two rounds of 20%: 64% of each layer kept
    refused = cli("compress", "--task", "digits-cnn", "--recipe", str(recipe), "--weights",
                  str(tmp_path / "run" / "baseline.pt"), "--out", str(tmp_path / "again"), "--quiet")  # fmt: skip
    assert refused.returncode == 2 and "leave out --weights" in refused.stderr
