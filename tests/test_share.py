import copy

import numpy as np
import pytest
import torch
from helpers import SmallNet, loaders

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.stages.share import kmeans_1d
from edgeshrink.train import TrainConfig, fit
from edgeshrink.weights import Mask, SharedWeights, attach_codebook, attach_mask, get_mask, get_shared


def run(model, stage, train=True):
    train_loader, val_loader = loaders()
    finetune = (lambda m, cfg, label: fit(m, train_loader, cfg, val_loader, stage=label)) if train else None
    return apply_stage(Artifact(model), parse_stage(stage), StageContext(finetune=finetune, evaluate=None))


def test_at_most_two_to_the_bits_values_after_fine_tuning():
    torch.manual_seed(0)
    model = SmallNet()
    run(model, {"type": "prune", "method": "sparsity", "sparsity": 0.7, "finetune": {"epochs": 1}})
    mask = get_mask(model.fc1).clone()
    before = get_shared(model.fc1)
    assert before is None
    run(model, {"type": "share", "bits": 3, "per_layer": {"conv": 2}, "finetune": {"epochs": 2, "lr": 1e-2}})
    centroids_after = get_shared(model.fc1).centroids.detach().clone()
    for layer, bits in ((model.fc1, 3), (model.fc2, 3), (model.conv, 2)):
        w = layer.weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 2**bits
    assert torch.all(model.fc1.weight[~mask] == 0)  # pruned weights stay zero
    assert torch.equal(get_mask(model.fc1), mask)
    run(model, {"type": "share", "bits": 3, "finetune": {"epochs": 0}}, train=False)  # re-sharing keeps the mask
    assert torch.all(model.fc1.weight[~mask] == 0)
    assert centroids_after.numel() <= 8


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(0)
    model = SmallNet()
    run(model, {"type": "share", "bits": 2, "finetune": {"epochs": 0}}, train=False)
    x, y = loaders()[0].inputs[:16], loaders()[0].labels[:16]
    shared = get_shared(model.fc1)
    weight = model.fc1.weight  # the parametrized tensor
    weight.retain_grad()
    loss = torch.nn.functional.cross_entropy(
        model.fc2(torch.relu(torch.nn.functional.linear(torch.relu(model.conv(x)).flatten(1), weight, model.fc1.bias))),
        y,
    )
    loss.backward()
    expected = torch.zeros_like(shared.centroids).index_add_(0, shared.assignment.reshape(-1), weight.grad.reshape(-1))
    assert torch.allclose(shared.centroids.grad, expected, atol=1e-6)


def test_kmeans_matches_its_assignments():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-1, 0.1, 500), rng.normal(1, 0.1, 500), rng.normal(3, 0.1, 10)])
    for init in ("linear", "density", "random"):
        centroids, labels = kmeans_1d(values, 3, init)
        assert len(centroids) == 3 and np.all(np.diff(centroids) > 0)
        nearest = np.abs(values[:, None] - centroids[None, :]).argmin(1)  # Lloyd's fixed point: nearest centroid
        assert np.mean(nearest == labels) > 0.99
        for k in range(3):
            assert abs(values[labels == k].mean() - centroids[k]) < 1e-3
    few = np.array([0.5, 0.5, -0.25])
    centroids, labels = kmeans_1d(few, 8)
    assert np.array_equal(centroids[labels], few)  # fewer distinct values than clusters: exact


def trained_with_fidelity(epochs):
    """A trained SmallNet and a user's metric that is not top-1: 100 minus the relative output error (in
    percent) against the trained model's own outputs, so only an exact reproduction scores 100."""
    torch.manual_seed(0)
    train_loader, val_loader = loaders()
    model = SmallNet()
    fit(model, train_loader, TrainConfig(epochs=epochs, lr=3e-3))
    x = val_loader.inputs
    with torch.no_grad():
        target = model(x)

    def fidelity(m):
        with torch.no_grad():
            return 100.0 - 100.0 * float((m(x) - target).abs().mean() / target.abs().mean())

    return model, fidelity


def test_accuracy_budget_raises_the_bits_until_it_holds():
    model, fidelity = trained_with_fidelity(epochs=3)
    ctx = StageContext(finetune=None, evaluate=fidelity)
    cfg = parse_stage({"type": "share", "bits": 1, "max_accuracy_drop": 0.5, "finetune": {"epochs": 0}})
    one_bit = apply_stage(Artifact(copy.deepcopy(model)), cfg.model_copy(update={"max_accuracy_drop": None}), ctx)
    assert 100.0 - fidelity(one_bit.model) > 0.5  # the budget has work to do here
    after = apply_stage(Artifact(model), cfg, ctx)
    record = after.records[-1]
    assert 100.0 - fidelity(after.model) <= 0.5
    assert "one more bit" in record.notes[0] and all(row["bits"] > 1 for row in record.layers)
    for row in record.layers:  # the codebooks the record states are the ones the model holds
        w = getattr(after.model, row["layer"]).weight.detach()
        assert torch.unique(w[w != 0]).numel() <= 2 ** row["bits"]


def test_a_missed_budget_is_noted_and_strict_makes_it_an_error(tmp_path):
    model, fidelity = trained_with_fidelity(epochs=2)  # a zero budget: 7-bit sharing cannot meet it
    recipe = edgeshrink.Recipe(
        name="tight",
        stages=[parse_stage({"type": "share", "bits": 7, "max_accuracy_drop": 0.0, "finetune": {"epochs": 0}})],
    )
    result = edgeshrink.compress(model, recipe, eval_fn=fidelity, out=tmp_path / "loose", progress=False)
    stage = result.report["stages"][0]
    assert stage["budget_met"] is False and "NOT met" in stage["notes"][-1]
    with pytest.raises(edgeshrink.EdgeshrinkError, match="NOT met.*strict"):
        edgeshrink.compress(model, recipe, eval_fn=fidelity, out=tmp_path / "strict", progress=False, strict=True)
    assert not (tmp_path / "strict" / "model.eshrink").exists()


def test_shared_weights_gradients_are_indexings_and_repeat_bit_for_bit():
    from edgeshrink.weights import SharedWeights

    torch.manual_seed(0)
    centroids, assignment = torch.randn(16), torch.randint(-1, 16, (300, 200))
    grads = []
    for _ in range(3):
        shared = SharedWeights(centroids, assignment)
        g = torch.randn(300, 200, generator=torch.Generator().manual_seed(1))
        (shared(torch.zeros(300, 200)) * g).sum().backward()
        grads.append(shared.centroids.grad.clone())
    assert all(torch.equal(grads[0], x) for x in grads[1:])
    expected = torch.zeros(17).index_add_(0, (assignment + 1).reshape(-1), g.reshape(-1))[1:]
    torch.testing.assert_close(grads[0], expected, rtol=1e-5, atol=1e-4)


def test_shared_biases_keep_at_most_two_to_the_bias_bits_values_through_the_container(tmp_path):
    """bias_bits: each bias holds at most 2^bits values after centroid fine-tuning, its values are the k-means
    centroids of the float bias before fine-tuning moved them, and the container stores them as a codebook
    that decodes to the same model."""
    torch.manual_seed(0)
    model = SmallNet()
    float_bias = model.fc1.bias.detach().double().numpy().copy()
    shared = copy.deepcopy(model)
    run(shared, {"type": "share", "bits": 3, "bias_bits": 2, "finetune": {"epochs": 0}}, train=False)
    centroids, labels = kmeans_1d(float_bias, 4)
    assert np.allclose(shared.fc1.bias.detach().double().numpy(), centroids[labels], atol=1e-6)
    run(model, {"type": "share", "bits": 3, "bias_bits": 2, "finetune": {"epochs": 1, "lr": 1e-2}})
    for layer in (model.fc1, model.fc2, model.conv):
        assert torch.unique(layer.bias.detach()).numel() <= 4
    assert not torch.allclose(model.fc1.bias.detach().double(), shared.fc1.bias.detach().double())  # fine-tuned
    train_loader, val_loader = loaders()
    result = edgeshrink.compress(
        SmallNet(),
        {"name": "b", "stages": [{"type": "share", "bits": 3, "bias_bits": 2, "finetune": {"epochs": 0}}]},
        out=tmp_path,
        train_loader=train_loader,
        val_loader=val_loader,
        progress=False,
    )
    decoded = edgeshrink.load(result.path, SmallNet()).model
    assert torch.unique(decoded.fc1.bias).numel() <= 4
    encodings = {r["tensor"]: r for r in result.report["entropy"]["streams"] if r["tensor"].endswith(".bias")}
    assert "fc1.bias" in encodings  # a Huffman-coded codebook stream, not raw float bytes


def test_sharing_a_copys_bias_leaves_the_original_intact():
    """torch keeps parametrized properties on a class that deep copies share: sharing the bias of a pruned
    copy must not give the original a `bias` property it cannot compute (the share stage's budget loop
    clusters fresh copies of one model), and baking the copy still restores the plain class."""
    torch.manual_seed(0)
    model = SmallNet()
    run(model, {"type": "prune", "method": "sparsity", "sparsity": 0.5, "finetune": {"epochs": 0}}, train=False)
    before = model.fc1.bias.detach().clone()
    for _ in range(2):
        copy_ = copy.deepcopy(model)
        run(copy_, {"type": "share", "bits": 2, "bias_bits": 1, "finetune": {"epochs": 0}}, train=False)
        assert torch.unique(copy_.fc1.bias.detach()).numel() <= 2
        assert torch.equal(model.fc1.bias.detach(), before)
    edgeshrink.weights.bake_in_place(copy_)
    assert type(copy_.fc1) is torch.nn.Linear


@pytest.mark.parametrize("in_channels", [1, 3])  # one input channel: both layouts at once, torch picks contiguous
def test_masked_and_shared_conv_weights_keep_the_channels_last_layout(in_channels):
    """A parametrized weight keeps its layer's strides (training switches conv nets to channels-last;
    a contiguous weight there sends oneDNN down a path 2x slower) and still computes the same values."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(in_channels, 4, 3).to(memory_format=torch.channels_last)
    strides = conv.weight.stride()
    keep = torch.rand(conv.weight.shape) > 0.5
    dense = torch.where(keep, conv.weight.detach(), 0.0)
    attach_mask(conv, "weight", keep)
    assert conv.weight.stride() == strides
    torch.testing.assert_close(conv.weight, dense, rtol=0, atol=0)
    assignment = torch.where(keep, torch.randint(0, 4, keep.shape), -1)
    centroids = torch.tensor([-0.2, -0.1, 0.1, 0.3])
    attach_codebook(conv, "weight", centroids, assignment)
    assert conv.weight.stride() == strides
    expected = torch.where(keep, centroids[assignment.clamp(min=0)], 0.0)
    torch.testing.assert_close(conv.weight, expected, rtol=0, atol=0)
    x = torch.randn(2, in_channels, 6, 6).contiguous(memory_format=torch.channels_last)
    conv(x).sum().backward()  # gradients still reach the centroids through the copy
    shared = next(p for p in conv.parametrizations.weight if isinstance(p, SharedWeights))
    assert shared.centroids.grad is not None and shared.centroids.grad.abs().sum() > 0
    assert any(isinstance(p, Mask) for p in conv.parametrizations.weight)
