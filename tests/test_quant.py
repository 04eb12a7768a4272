"""Quantization: calibrators, fake quantizers, placement, masks through QAT, mixed precision."""

import numpy as np
import pytest
import torch
from helpers import SmallNet, loaders
from torch import nn

import edgeshrink
from edgeshrink.quant.calibrate import METHODS, calibrate_range
from edgeshrink.quant.fakequant import WeightQuant, affine_params, weight_qmax
from edgeshrink.quant.passes import calibrate, correct_bias
from edgeshrink.quant.prepare import prepare, weight_quantizers
from edgeshrink.quant.ptq import post_training_quantize
from edgeshrink.train import TrainConfig, evaluate, fit
from edgeshrink.weights import attach_mask, get_mask


def _quant_mse(samples, lo, hi):
    scale, zp = affine_params(lo, hi)
    q = np.clip(np.round(samples / scale) + zp, 0, 255)
    return float(np.mean(((q - zp) * scale - samples) ** 2))


def test_calibrators_clip_outliers_and_mse_is_optimal_among_its_candidates():
    rng = np.random.default_rng(0)
    samples = np.concatenate([rng.normal(0, 1, 200_000), [60.0, -45.0]]).astype(np.float32)
    lo, hi = float(samples.min()), float(samples.max())
    ranges = {m: calibrate_range(samples, lo, hi, m) for m in METHODS}
    assert ranges["minmax"] == (lo, hi)
    inliers = samples[np.abs(samples) < 4]
    for method in ("percentile", "kl"):
        assert ranges[method][1] - ranges[method][0] < (hi - lo) / 3, method  # the outliers are clipped
        assert _quant_mse(inliers, *ranges[method]) < _quant_mse(inliers, lo, hi) / 10, method  # finer steps
    # MSE weighs the clipped outliers' error against finer steps for all the others: a narrower range
    # than min-max, and less total error (what it minimises).
    assert ranges["mse"][1] - ranges["mse"][0] < hi - lo
    assert _quant_mse(samples, *ranges["mse"]) < _quant_mse(samples, lo, hi)
    # MSE picks the candidate with the least error: no other shrink factor beats it (numpy oracle).
    best = _quant_mse(samples, *ranges["mse"])
    for f in (0.1, 0.2, 0.3, 0.5, 0.8):
        assert best <= _quant_mse(samples, lo * f, hi * f) * 1.02


def test_affine_grid_keeps_zero_exact():
    for lo, hi in [(-1.3, 2.7), (0.0, 5.0), (-3.0, -1.0), (0.2, 0.9)]:
        scale, zp = affine_params(lo, hi)
        x = torch.tensor([0.0])
        assert torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255).item() == 0.0
        assert 0 <= zp <= 255


@pytest.mark.parametrize("bits,group", [(8, 0), (4, 0), (4, 2), (3, 0)])
def test_weight_quant_has_at_most_2_pow_bits_levels_per_scale(bits, group):
    torch.manual_seed(0)
    weight = torch.randn(6, 5, 3, 3)
    quantizer = WeightQuant(weight, bits, group)
    out = quantizer(weight)
    ints = quantizer.integers(weight)
    qmax = weight_qmax(bits)
    assert ints.abs().max() <= qmax and torch.equal(ints, ints.round())
    assert torch.allclose(out, ints * quantizer.expanded_scale(weight))
    assert (out - weight).abs().max() <= quantizer.expanded_scale(weight).max() / 2 + 1e-6
    weight.requires_grad_(True)
    quantizer(weight).sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))  # straight-through


def test_quantizers_sit_where_integer_kernels_need_them(trained):
    bits = {"conv": 8, "fc1": 8, "fc2": 8}
    model, plan = prepare(trained, bits)
    order = [n.target for n in model.graph.nodes if n.op == "call_module"]
    # each quantized layer is fed by a quantizer and followed by one (after its fused ReLU)
    for layer in bits:
        i = order.index(layer)
        assert order[i - 1].startswith("act_quant") and any(t.startswith("act_quant") for t in order[i + 1 : i + 3])
    assert [p.status for p in plan.layers] == ["quantized"] * 3


def test_ptq_accuracy_close_to_float(trained):
    train_loader, val_loader = loaders()
    model, _ = prepare(trained, {"conv": 8, "fc1": 8, "fc2": 8})
    calibrate(model, train_loader, method="percentile")
    correct_bias(model, train_loader)
    assert abs(evaluate(model, val_loader) - evaluate(trained, val_loader)) <= 3.0


def test_pruned_weights_stay_zero_through_qat_and_export(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    pruned = SmallNet()
    pruned.load_state_dict(trained.state_dict())
    keep = trained.fc1.weight.abs() > trained.fc1.weight.abs().median()
    attach_mask(pruned.fc1, "weight", keep)
    train_loader, val_loader = loaders()
    model, _ = prepare(pruned, {"conv": 8, "fc1": 8, "fc2": 8})
    calibrate(model, train_loader)
    fit(model, train_loader, TrainConfig(epochs=2, lr=1e-3))  # QAT
    assert torch.equal(get_mask(model.fc1, "weight"), keep)
    assert bool((model.fc1.weight[~keep] == 0).all())
    edgeshrink.export(model.eval(), tmp_path / "m.onnx", verify_data=[val_loader.inputs])
    graph = onnx.load(tmp_path / "m.onnx").graph
    ints = {i.name: numpy_helper.to_array(i) for i in graph.initializer}["fc1.weight_quantized"]
    assert ints.dtype == np.int8 and bool((ints[~keep.numpy()] == 0).all())


def test_unsupported_layer_stays_float_and_still_exports(tmp_path):
    class WithNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.norm = nn.LayerNorm([4, 8, 8])
            self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
            self.fc = nn.Linear(2 * 16 * 16, 3)

        def forward(self, x):
            x = self.up(torch.relu(self.norm(self.conv(x))))
            return self.fc(x.flatten(1))

    torch.manual_seed(0)
    model = WithNorm()
    fit(model, loaders()[0], TrainConfig(epochs=3, lr=3e-3))
    model.eval()
    x = loaders()[1].inputs
    qmodel, plan = prepare(model, {"conv": 8, "fc": 8})
    calibrate(qmodel, [(x, None)])
    status = {p.name: (p.status, p.reason) for p in plan.layers}
    assert status["conv"][0] == status["fc"][0] == "quantized"
    for name in ("norm", "up"):
        assert status[name][0] == "float" and "unsupported op" in status[name][1]
    result = edgeshrink.export(qmodel, tmp_path / "m.onnx", verify_data=[x])
    assert result.parity["top1_agreement"] >= 99.5
    assert {r["layer"] for r in result.layers} == {"conv", "fc"}


def test_mixed_precision_meets_the_budget_and_reports_sensitivity(trained, tmp_path):
    train_loader, val_loader = loaders()
    probe = torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    reference = trained(probe).argmax(1)

    def fidelity(model):  # percent of predictions that agree with the float model on random inputs
        with torch.no_grad():
            return 100.0 * float((model(probe).argmax(1) == reference).float().mean())

    recipe = tmp_path / "mp.toml"
    recipe.write_text('[[stages]]\ntype = "quantize"\nweight_bits = 2\nmax_accuracy_drop = 0.5\n')
    result = edgeshrink.compress(
        trained, recipe, train_loader=train_loader, eval_fn=fidelity, out=tmp_path / "run", progress=False
    )
    stage = result.report["stages"][0]
    assert all("sensitivity_drop" in row for row in stage["layers"])
    base = result.report["baseline"]["accuracy"]
    assert base - stage["accuracy"] <= 0.5 + 1e-9
    raised = [row for row in stage["layers"] if row["status"] == "float" or row["weight_bits"] != 2]
    assert raised, "2-bit everywhere cannot hold a 0.5-point budget; some layer must have been raised"
    fresh = edgeshrink.unpack(result.path, SmallNet())
    assert torch.equal(fresh(val_loader.inputs), result.model(val_loader.inputs))


def test_activation_quantizers_are_shared_only_across_shape_ops(trained):
    model, plan = prepare(trained, {"conv": 8, "fc1": 8, "fc2": 8})
    calls = [n for n in model.graph.nodes if n.op == "call_module" and str(n.target).startswith("act_quant")]
    # SmallNet: input, conv(+relu), flatten (shares conv's quantizer), fc1(+relu), fc2
    assert len(plan.activations) == 4 and len(calls) == 5
    flatten = next(n for n in model.graph.nodes if n.op == "call_method" and n.target == "flatten")
    after, before = next(iter(flatten.users)), flatten.args[0]
    assert after.target == before.target  # the same ActQuant module on both sides of the reshape
    assert len(weight_quantizers(model)) == 3


class WithOptions(nn.Module):
    """A forward with options beside the input (`mask=None`, `return_features=False`): torch.fx traced them as
    values and `if mask is not None` failed, so quantization refused the model."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv1d(2, 8, 3, padding=1), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x, mask=None, return_features: bool = False):
        if mask is not None:
            x = x * mask
        h = torch.relu(self.bn(self.conv(x))).mean(2)
        return h if return_features else self.fc(h)


def test_a_forward_with_default_options_quantizes_with_those_defaults(tmp_path):
    torch.manual_seed(0)
    model, x = WithOptions().eval(), torch.randn(64, 2, 16)
    quantized, plan = post_training_quantize(model, [(x, None)])
    assert {layer.name for layer in plan.layers if layer.status == "quantized"} == {"conv", "fc"}
    assert plan.folded_batchnorms == ["bn"]
    with torch.no_grad():
        out, ref = quantized(x), model(x)
    assert out.shape == ref.shape == (64, 3) and (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    exported = edgeshrink.export(quantized, tmp_path / "m.onnx", x[:1], verify_data=[x])
    assert exported.parity["top1_agreement"] == 100.0
