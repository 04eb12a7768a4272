"""GPTQ rounding: the unfolded inputs reproduce each conv, the rounded codes stay on the calibrated grid
(scales unchanged, pruned zeros zero), the layer outputs move closer to float, and the mean error is
folded into the bias. Oracles: torch's own conv and linear, and nearest rounding on the same model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeshrink.quant.passes import calibrate
from edgeshrink.quant.prepare import (
    activation_quantizers,
    prepare,
    refresh_weight_scales,
    weight_quantizers,
)
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize
from edgeshrink.quant.recurrent import recurrent_quantizers
from edgeshrink.quant.rounding import _columns, _execution_order, _float_target, _statistics, _targets, gptq_round
from edgeshrink.weights import attach_mask


@pytest.mark.parametrize(
    "layer,shape",
    [
        (nn.Conv2d(4, 6, 3, stride=2, padding=1), (2, 4, 9, 9)),
        (nn.Conv2d(4, 8, (3, 2), dilation=(2, 1), groups=2), (2, 4, 10, 7)),
        (nn.Conv2d(6, 6, 3, padding=1, groups=6), (2, 6, 5, 5)),  # depthwise
        (nn.Conv1d(3, 5, 5, stride=2, padding=2, dilation=1), (2, 3, 17)),
        (nn.Conv1d(4, 4, 3, padding=2, dilation=2, groups=4), (2, 4, 11)),
        (nn.Linear(7, 3), (2, 5, 7)),  # [batch, tokens, features]
    ],
)
def test_unfolded_columns_times_weights_is_the_layer(layer, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    cols = _columns(layer, x)  # [groups, samples, columns]
    groups = getattr(layer, "groups", 1)
    weight = layer.weight.detach().reshape(groups, layer.weight.shape[0] // groups, -1)
    product = cols @ weight.transpose(1, 2)  # [groups, samples, out / groups]
    got = product.permute(0, 2, 1).reshape(layer.weight.shape[0], -1)  # per output channel
    if isinstance(layer, nn.Linear):
        channels = F.linear(x, layer.weight).reshape(-1, layer.weight.shape[0]).T
    else:  # samples in (batch, position) order, as unfold lays them out
        reference = layer._conv_forward(x, layer.weight, None)
        channels = reference.movedim(1, 0).reshape(reference.shape[1], -1)
    assert torch.allclose(got, channels, atol=1e-5)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(16, 16, 3, groups=4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 14, 10),
    ).eval()


def _batches(seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 4, 16, generator=g)
    return [(x[i : i + 128], None) for i in range(0, 512, 128)]


@pytest.mark.parametrize("bits", [4, 8])
def test_gptq_outputs_are_closer_to_float_than_nearest_rounding(bits):
    """The weights' share of the output error (activation quantizers off when measuring) is smaller."""
    model, batches = _net(), _batches()
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        reference = model(x)
        errors = {}
        for rounding in ("nearest", "gptq"):
            settings = PTQSettings(calibration="minmax", rounding=rounding)
            quantized, _ = post_training_quantize(model, batches, bits, settings)
            for _, quantizer in activation_quantizers(quantized):
                quantizer.mode = "off"
            errors[rounding] = float(((quantized(x) - reference) ** 2).mean())
    assert errors["gptq"] < 0.9 * errors["nearest"], errors


@pytest.mark.parametrize("float_targets", [False, True])
def test_gptq_keeps_the_grid_and_the_pruned_zeros(float_targets):
    model, batches = _net(), _batches()
    mask = (torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    attach_mask(model[0], "weight", mask)
    quantized, _ = prepare(model, {"0": 4, "2": 4, "5": 4})
    calibrate(quantized, batches, method="minmax")
    before = {name: q.scale.clone() for name, _, q in weight_quantizers(quantized)}
    nearest = {name: q.integers(m.weight.detach()) for name, m, q in weight_quantizers(quantized)}
    assert gptq_round(quantized, batches, bias_correction=False, float_targets=float_targets) == ["0", "2", "5"]
    consistent, moved = 0, 0
    for name, module, quantizer in weight_quantizers(quantized):
        quantizer.enabled = False
        weight = module.weight.detach()
        quantizer.enabled = True
        codes = weight / quantizer.expanded_scale(weight)
        assert torch.allclose(codes, codes.round(), atol=1e-4), name  # the kept weights are codes x scale
        assert codes.abs().max() <= 7 + 1e-4
        consistent += int((codes.round() == quantizer.integers(weight)).all())  # what export stores
        moved += int((codes.round() != nearest[name]).sum())
    refresh_weight_scales(quantized)  # what the quantize stage does next: the grid must not move
    for name, _, quantizer in weight_quantizers(quantized):
        assert torch.allclose(quantizer.scale, before[name]), name
    assert consistent == 3 and moved > 0  # GPTQ chose codes other than the nearest ones
    pruned = quantized.get_submodule("0").weight.detach()[mask == 0]
    assert torch.equal(pruned, torch.zeros_like(pruned))


def test_gptq_folds_the_mean_output_error_into_the_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8)).eval()
    batches = [(torch.randn(256, 32) + 0.5, None) for _ in range(2)]  # a nonzero input mean
    x = torch.cat([b[0] for b in batches])
    means = {}
    for correct in (False, True):
        quantized, _ = prepare(model, {"0": 3})
        calibrate(quantized, batches, method="minmax")
        gptq_round(quantized, batches, bias_correction=correct)
        with torch.no_grad():
            means[correct] = (quantized(x) - model(x)).mean(dim=0).abs().max()
    # input activations are quantized too, so the shift is not exactly zero; without it, it is larger
    assert means[True] < 0.2 * means[False], means


def test_the_quantize_stage_reports_which_layers_gptq_rounded(trained, tmp_path):
    """A reflect-padded conv cannot be unfolded: it keeps nearest rounding, and the stage says so."""
    import copy

    from helpers import loaders

    import edgeshrink

    model = copy.deepcopy(trained)
    model.conv.padding_mode = "reflect"
    recipe = tmp_path / "gptq.toml"
    recipe.write_text('[[stages]]\ntype = "quantize"\nrounding = "gptq"\n')
    train_loader, val_loader = loaders()
    result = edgeshrink.compress(
        model, recipe, train_loader=train_loader, val_loader=val_loader, out=tmp_path / "run", progress=False
    )
    notes = [n for n in result.artifact.records[-1].notes if "GPTQ" in n]
    assert notes == [
        "weights rounded by GPTQ for each layer's output: 2 of 3 layers; nearest rounding kept "
        "(a shared codebook, a conv F.unfold cannot express, or a singular input Hessian): conv"
    ]


def test_a_layer_whose_hessian_cannot_be_inverted_is_left_as_it_was(monkeypatch):
    import edgeshrink.quant.rounding as rounding

    def singular(*_args, **_kw):
        raise torch.linalg.LinAlgError("not positive definite")

    model, batches = _net(), _batches()
    quantized, _ = prepare(model, {"0": 4, "2": 4, "5": 4})
    calibrate(quantized, batches, method="minmax")
    before = {name: m.parametrizations.weight.original.clone() for name, m, _ in weight_quantizers(quantized)}
    monkeypatch.setattr(rounding.torch.linalg, "cholesky", singular)
    assert gptq_round(quantized, batches) == []
    for name, module, _ in weight_quantizers(quantized):
        assert torch.equal(module.parametrizations.weight.original, before[name]), name


def test_the_float_target_is_the_least_squares_fit_to_the_float_outputs():
    """V = W C^T H~^-1 against numpy's least squares of the float outputs W x on the quantized inputs x~."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 12, generator=g).double() + 0.3
    noisy = x + 0.05 * torch.randn(x.shape, generator=g).double()  # what a quantized model feeds the layer
    weight = torch.randn(5, 12, generator=g)
    hessian, cross = 2 * noisy.T @ noisy / len(x), noisy.T @ x / len(x)
    fit = np.linalg.lstsq(noisy.numpy(), (x @ weight.double().T).numpy(), rcond=None)[0].T
    got = _float_target(weight, hessian, cross).double().numpy()
    assert np.abs(got - fit).max() < 0.02 * np.abs(fit).max()
    assert np.abs(got - weight.numpy()).max() > 0.1 * np.abs(got - fit).max()  # the fit moved W
    exact = _float_target(weight, 2 * x.T @ x / len(x), x.T @ x / len(x))  # no input error: V = W
    assert torch.allclose(exact, weight, atol=1e-5)


def test_float_targets_bring_the_output_closer_to_the_float_model():
    """Each layer aims at the float model's output, so the whole network's error on other inputs (activation
    quantizers on) is smaller than when each layer aims at its own float weights on its quantized inputs."""
    model, batches = _net(), _batches()
    x = torch.cat([b[0] for b in _batches(seed=7)])
    errors = {}
    with torch.no_grad():
        for rounding in ("gptq", "gptq-float"):
            quantized, plan = post_training_quantize(
                model, batches, 4, PTQSettings(calibration="minmax", rounding=rounding)
            )
            assert plan.gptq_rounded == ["0", "2", "5"]
            errors[rounding] = float(((quantized(x) - model(x)) ** 2).mean())
    assert errors["gptq-float"] < 0.9 * errors["gptq"], errors


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(6, 16, 3, padding=1)
        self.gru = nn.GRU(16, 12, batch_first=True)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(torch.relu(self.conv(x)).transpose(1, 2))
        return self.head(out[:, -1])


def _gate_inputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """W_ih x + b_ih of the model's GRU: the part of its gates computed from its input."""
    seen = []
    handle = model.gru.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    with torch.no_grad():
        model(x)
        handle.remove()
        return F.linear(seen[0], model.gru.weight_ih_l0, model.gru.bias_ih_l0)


def test_a_recurrent_layers_input_weights_are_rounded_on_their_row_grid():
    """GRU weight_ih_l0 codes stay on the calibrated per-row grid, and its gate inputs on the quantized
    model's inputs come closer to the float model's than with nearest rounding (what GPTQ minimises)."""
    model = _Recurrent().eval()
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(64, 6, 10, generator=g), None) for _ in range(4)]
    x = torch.cat([b[0] for b in batches])
    reference = _gate_inputs(model, x)
    errors = {}
    for rounding in ("nearest", "gptq-float"):
        quantized, plan = post_training_quantize(
            model, batches, 8, PTQSettings(calibration="minmax", rounding=rounding)
        )
        [(key, gru, _, quantizer)] = [r for r in recurrent_quantizers(quantized) if r[2] == "weight_ih_l0"]
        quantizer.enabled = False
        stored = gru.weight_ih_l0.detach()
        quantizer.enabled = True
        assert torch.allclose(quantizer.compute_scale(stored), quantizer.scale)  # the grid did not move
        assert (key in plan.gptq_rounded) == (rounding != "nearest")
        if rounding != "nearest":  # the stored weights are codes x the calibrated per-row scale
            codes = stored / quantizer.expanded_scale(stored)
            assert torch.allclose(codes, codes.round(), atol=1e-4)
        errors[rounding] = float(((_gate_inputs(quantized, x) - reference) ** 2).mean())
    assert errors["gptq-float"] < errors["nearest"], errors


class _Shared(nn.Module):
    """One Linear applied to two different inputs in each forward (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.proj(2 * x + 1)


def test_a_layer_called_twice_is_rounded_for_both_calls():
    model = _Shared().eval()
    batches = [(torch.randn(64, 8, generator=torch.Generator().manual_seed(5)), None)]
    quantized, _ = prepare(model, {"proj": 8})
    calibrate(quantized, batches, method="minmax")
    [(target, calls)] = _execution_order(quantized, _targets(quantized), batches[0][0]).items()
    assert calls == 2
    stats = _statistics(quantized, target.module, [batches[0][0]], calls, None)
    seen = []
    handle = target.module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].double()))
    with torch.no_grad():
        quantized(batches[0][0])
    handle.remove()
    both = torch.cat(seen)  # the inputs of both calls, as the layer saw them
    assert torch.allclose(stats.hessian[0], 2 * both.T @ both / len(both))
    assert torch.allclose(stats.mean[0], both.mean(dim=0))
