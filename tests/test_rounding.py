"""GPTQ rounding: the unfolded inputs reproduce each conv, the rounded codes stay on the calibrated grid
(scales unchanged, pruned zeros zero), the layer outputs move closer to float, and the mean error is
folded into the bias. Oracles: torch's own conv and linear, and nearest rounding on the same model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeshrink.quant.passes import calibrate
from edgeshrink.quant.prepare import activation_quantizers, prepare, refresh_weight_scales, weight_quantizers
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize
from edgeshrink.quant.rounding import _columns, gptq_round
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


def test_gptq_keeps_the_grid_and_the_pruned_zeros():
    model, batches = _net(), _batches()
    mask = (torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    attach_mask(model[0], "weight", mask)
    quantized, _ = prepare(model, {"0": 4, "2": 4, "5": 4})
    calibrate(quantized, batches, method="minmax")
    before = {name: q.scale.clone() for name, _, q in weight_quantizers(quantized)}
    nearest = {name: q.integers(m.weight.detach()) for name, m, q in weight_quantizers(quantized)}
    assert gptq_round(quantized, batches, bias_correction=False) == ["0", "2", "5"]
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
