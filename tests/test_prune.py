import copy

import numpy as np
import pytest
import torch
from helpers import SmallNet, loaders

from edgeshrink.artifact import Artifact
from edgeshrink.errors import ConfigError, ScopeError
from edgeshrink.scope import Scope
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.train import TrainConfig, evaluate, fit
from edgeshrink.weights import get_mask


def context(train=True):
    train_loader, val_loader = loaders()
    finetune = (lambda m, cfg, label: fit(m, train_loader, cfg, val_loader, stage=label)) if train else None
    return StageContext(finetune=finetune, evaluate=None)


def test_threshold_prunes_below_quality_times_std():
    torch.manual_seed(0)
    model = SmallNet()
    dense = {n: getattr(model, n).weight.detach().numpy().copy() for n in ("conv", "fc1", "fc2")}
    cfg = parse_stage({"type": "prune", "method": "threshold", "quality": 0.7, "finetune": {"epochs": 0}})
    apply_stage(Artifact(model), cfg, context(train=False))
    for name, w in dense.items():
        expected = np.abs(w) >= 0.7 * w.std(ddof=1)  # numpy oracle (torch.std is the sample std)
        assert np.array_equal(get_mask(getattr(model, name)).numpy(), expected)
        assert np.array_equal(getattr(model, name).weight.detach().numpy() == 0, ~expected)


def test_sparsity_layerwise_and_global_counts():
    torch.manual_seed(0)
    model = SmallNet()
    cfg = parse_stage(
        {"type": "prune", "method": "sparsity", "sparsity": 0.75, "per_layer": {"fc2": 0.5}, "finetune": {"epochs": 0}}
    )
    apply_stage(Artifact(model), cfg, context(train=False))
    assert int(get_mask(model.fc1).sum()) == round(model.fc1.weight.numel() * 0.25)
    assert int(get_mask(model.fc2).sum()) == round(model.fc2.weight.numel() * 0.5)
    model = SmallNet()
    cfg = parse_stage(
        {"type": "prune", "method": "sparsity", "scheme": "global", "sparsity": 0.9, "finetune": {"epochs": 0}}
    )
    weights = torch.cat([getattr(model, n).weight.detach().abs().reshape(-1) for n in ("conv", "fc1", "fc2")])
    apply_stage(Artifact(model), cfg, context(train=False))
    kept = sum(int(get_mask(getattr(model, n)).sum()) for n in ("conv", "fc1", "fc2"))
    assert kept == round(weights.numel() * 0.1)
    smallest_kept = min(
        float(getattr(model, n).weight.detach().abs()[get_mask(getattr(model, n))].min())
        for n in ("conv", "fc1", "fc2")
    )
    assert smallest_kept >= float(torch.quantile(weights, 0.9 - 1e-6)) - 1e-7


def test_pruned_weights_stay_zero_through_fine_tuning():
    torch.manual_seed(0)
    model = SmallNet()
    cfg = parse_stage(
        {
            "type": "prune",
            "method": "sparsity",
            "sparsity": 0.8,
            "iterations": 2,
            "finetune": {"epochs": 2, "lr": 1e-2, "weight_decay": 1e-3},
        }
    )
    before = model.fc1.weight.detach().clone()
    apply_stage(Artifact(model), cfg, context())
    mask = get_mask(model.fc1)
    assert torch.all(model.fc1.weight[~mask] == 0)
    assert not torch.equal(model.fc1.weight[mask], before[mask])  # the kept weights did train
    # A later fine-tuning of any kind (here: a plain SGD loop of the user's) cannot revive them.
    train_loader, _ = loaders()
    fit(model, train_loader, TrainConfig(epochs=1, optimizer="sgd", lr=0.1))
    assert torch.all(model.fc1.weight[~mask] == 0)


def test_masks_only_shrink_across_stages():
    torch.manual_seed(0)
    model = SmallNet()
    ctx = context(train=False)
    apply_stage(
        Artifact(model),
        parse_stage({"type": "prune", "method": "sparsity", "sparsity": 0.5, "finetune": {"epochs": 0}}),
        ctx,
    )
    first = get_mask(model.fc1).clone()
    with torch.no_grad():  # make the pruned entries of the original large: they must still not come back
        model.fc1.parametrizations.weight.original.mul_(~first).add_(~first * 100.0)
    apply_stage(
        Artifact(model),
        parse_stage({"type": "prune", "method": "sparsity", "sparsity": 0.6, "finetune": {"epochs": 0}}),
        ctx,
    )
    assert torch.all(get_mask(model.fc1) <= first)


def test_bad_prune_settings_give_clear_errors():
    model = SmallNet()
    with pytest.raises(ScopeError, match="'fc9'"):
        apply_stage(
            Artifact(model),
            parse_stage({"type": "prune", "per_layer": {"fc9": 1.0}, "finetune": {"epochs": 0}}),
            context(train=False),
        )
    with pytest.raises(ConfigError, match="every weight"):
        parse_stage({"type": "prune", "method": "sparsity", "per_layer": {"fc1": 1.0}})
    with pytest.raises(ConfigError, match="removes every weight"):
        apply_stage(
            Artifact(model),
            parse_stage({"type": "prune", "quality": 1000.0, "finetune": {"epochs": 0}}),
            context(train=False),
        )
    with pytest.raises(ConfigError, match="no training data"):
        apply_stage(
            Artifact(SmallNet()), parse_stage({"type": "prune", "finetune": {"epochs": 1}}), context(train=False)
        )


def test_generic_selectors_and_precedence():
    from edgeshrink.scope import per_layer, select_layers

    model = SmallNet()
    layers = select_layers(model)
    settings = {"linear": 1, "conv": 2, "last": 3, "fc*": 4, "fc1": 5}
    assert per_layer(model, layers, settings, 0, "t") == {"conv": 2, "fc1": 5, "fc2": 4}
    assert per_layer(model, layers, {"first": 7, "last": 8, "Conv3d": 9}, 0, "t") == {"conv": 7, "fc1": 0, "fc2": 8}
    assert [n for n, _ in select_layers(model, Scope(exclude=["first", "last"]))] == ["fc1"]
    with pytest.raises(ScopeError, match=r"'fc\*3'"):
        per_layer(model, layers, {"fc*3": 1}, 0, "t")


def budget_setting():
    """A SmallNet trained 3 epochs, its validation loader and accuracy, and a context that evaluates on it."""
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    model = SmallNet()
    fit(model, train_loader, TrainConfig(epochs=3, lr=3e-3))
    ctx = StageContext(finetune=None, evaluate=lambda m: evaluate(m, val_loader))
    return model, val_loader, evaluate(model, val_loader), ctx


def test_accuracy_budget_stops_at_the_last_round_within_it():
    model, val_loader, reference, ctx = budget_setting()
    settings = {"type": "prune", "method": "sparsity", "sparsity": 0.97, "iterations": 4, "schedule": "linear"}
    cfg = parse_stage({**settings, "max_accuracy_drop": 1.0, "finetune": {"epochs": 0}})
    after = apply_stage(Artifact(model), cfg, ctx)
    record = after.records[-1]
    assert reference - evaluate(after.model, val_loader) <= 1.0  # the budget holds on the model returned
    assert "accuracy budget 1 points" in record.notes[0]
    kept = sum(r["kept"] for r in record.layers) / sum(r["weights"] for r in record.layers)
    assert kept > 0.03  # it stopped short of the planned 97%
    # a budget nothing violates changes nothing: the planned sparsity is reached
    loose = parse_stage({**settings, "max_accuracy_drop": 100.0, "finetune": {"epochs": 0}})
    full = apply_stage(Artifact(SmallNet()), loose, ctx).records[-1]
    assert not full.notes
    assert sum(r["kept"] for r in full.layers) == pytest.approx(0.03 * sum(r["weights"] for r in full.layers), abs=3)
    unchecked = apply_stage(Artifact(SmallNet()), cfg, context(train=False)).records[-1]  # no validation data
    assert "NOT enforced" in unchecked.notes[0]


def test_back_off_bisects_to_the_highest_tried_sparsity_within_the_budget():
    model, val_loader, reference, ctx = budget_setting()
    settings = {"type": "prune", "method": "sparsity", "sparsity": 0.95, "finetune": {"epochs": 0}}
    cfg = parse_stage({**settings, "max_accuracy_drop": 1.0, "backoff_steps": 3})
    after = apply_stage(Artifact(copy.deepcopy(model)), cfg, ctx)
    record = after.records[-1]
    assert reference - evaluate(after.model, val_loader) <= 1.0  # the budget holds on the model returned
    tries = [n for n in record.notes if n.startswith("back-off")]
    assert len(tries) == 3
    kept_tries = [float(n.split(": ")[1].split("%")[0]) for n in tries if n.endswith("kept")]
    sparsity = 100 * (1 - sum(r["kept"] for r in record.layers) / sum(r["weights"] for r in record.layers))
    assert kept_tries, "some sparsity below 95% must hold a 1-point budget"
    assert sparsity == pytest.approx(max(kept_tries), abs=0.05)  # the last kept try is the highest one
    # without back-off the failed first round leaves the model unpruned
    none = parse_stage({**settings, "max_accuracy_drop": 1.0, "backoff_steps": 0})
    assert all(
        r["kept"] == r["weights"] for r in apply_stage(Artifact(copy.deepcopy(model)), none, ctx).records[-1].layers
    )


def _alone(model, name, sparsity, val_loader):
    """Accuracy with only layer `name` magnitude-pruned to `sparsity` (the oracle: plain torch, no masks)."""
    trial = copy.deepcopy(model)
    weight = getattr(trial, name).weight
    keep = max(1, round(weight.numel() * (1 - sparsity)))
    threshold = weight.detach().abs().reshape(-1).sort(descending=True).values[keep - 1]
    with torch.no_grad():
        weight.mul_((weight.abs() >= threshold).float())
    return evaluate(trial, val_loader)


def test_sensitivity_scheme_gives_each_layer_the_highest_sparsity_within_its_drop():
    torch.manual_seed(0)
    model = SmallNet()
    train_loader, val_loader = loaders()
    fit(model, train_loader, TrainConfig(epochs=3, lr=1e-2), None)
    reference = evaluate(model, val_loader)
    drop, cap = 2.0, 0.995
    cfg = parse_stage(
        {
            "type": "prune",
            "method": "sparsity",
            "scheme": "sensitivity",
            "sparsity": cap,
            "sensitivity_drop": drop,
            "finetune": {"epochs": 0},
        }
    )
    dense = copy.deepcopy(model)
    ctx = StageContext(finetune=None, evaluate=lambda m: evaluate(m, val_loader))
    record = apply_stage(Artifact(model), cfg, ctx).records[-1]
    chosen = {row["layer"]: row["setting"] for row in record.layers}
    assert len(set(chosen.values())) > 1  # the layers' sensitivities differ, so do their sparsities
    for name, sparsity in chosen.items():
        assert _alone(dense, name, sparsity, val_loader) >= reference - drop
        if sparsity < cap:  # the bisection's last step more (cap / 2^10) costs more than the drop
            assert _alone(dense, name, sparsity + cap / 2**10, val_loader) < reference - drop
        kept = int(get_mask(getattr(model, name)).sum())
        assert kept == max(1, round(getattr(model, name).weight.numel() * (1 - sparsity)))
    assert "sensitivity analysis" in record.notes[0]


def test_sensitivity_scheme_without_validation_data_is_a_clear_error():
    cfg = parse_stage({"type": "prune", "method": "sparsity", "scheme": "sensitivity", "finetune": {"epochs": 0}})
    with pytest.raises(ConfigError, match="validation data"):
        apply_stage(Artifact(SmallNet()), cfg, context(train=False))


def test_a_layer_the_global_threshold_would_empty_keeps_its_own_largest_weights():
    """On a small model one layer's weights can all sit below the global threshold (deep-compression refused
    such models: 'removes every weight of layer'); that layer keeps its own largest share instead."""
    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():
        model.conv.weight.mul_(1e-3)  # every conv weight below every fc weight
    cfg = parse_stage(
        {"type": "prune", "method": "sparsity", "sparsity": 0.9, "scheme": "global", "finetune": {"epochs": 0}}
    )
    art = apply_stage(Artifact(model), cfg, context(train=False))
    conv = art.model.conv
    weight, mask = conv.weight.detach().abs(), get_mask(conv)
    assert int(mask.sum()) == round(0.1 * weight.numel())
    assert weight[mask].min() >= weight[~mask].max()  # its largest, by magnitude
    assert any("every weight of conv" in n for n in art.records[-1].notes)
    fc = torch.cat([m.weight.detach().abs().reshape(-1) for m in (art.model.fc1, art.model.fc2)])
    assert (fc != 0).float().mean() < 0.11  # the others still share the one threshold
