"""Quantization on the layers sequence models use: a Linear applied to [batch, time, features], and a
transformer encoder layer (attention, LayerNorm, GELU) whose projections run on integer kernels while
its norms stay float with their reasons listed."""

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.quant.passes import correct_bias
from edgeshrink.quant.prepare import prepare, weight_quantizers
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
        self.head = nn.Linear(32, 4)

    def forward(self, x):  # x: [batch, time, features]
        return self.head(self.enc(self.embed(x)).mean(1))


def test_bias_correction_of_a_linear_on_sequences_matches_the_mean_error_per_feature():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16)).eval()
    x = torch.randn(6, 12, 8)
    quantized, _ = prepare(model, {"0": 4})
    layer = quantized.get_submodule("0")
    quantizer = weight_quantizers(quantized)[0][2]
    with torch.no_grad():
        float_out = x @ layer.parametrizations.weight.original.T + layer.bias  # oracle: float weights
        quantized_out = layer(x)
    expected = (float_out - quantized_out).reshape(-1, 16).mean(0).numpy()  # mean over batch and time
    before = layer.bias.detach().clone()
    correct_bias(quantized, [(x, None)], num_batches=1)
    np.testing.assert_allclose((layer.bias.detach() - before).numpy(), expected, rtol=1e-5, atol=1e-7)
    assert quantizer.enabled


def test_transformer_int8_quantizes_every_projection_and_lists_what_stays_float(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 12, 8)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(Encoder().eval(), example_input=x[:1]), parse_stage({"type": "quantize"}), ctx)
    rows = {r["name"]: r for r in art.records[-1].layers}
    projections = [f"enc.self_attn.{p}_proj" for p in ("q", "k", "v", "out")]
    for name in ["embed", "head", "enc.linear1", "enc.linear2", *projections]:
        assert rows[name]["status"] == "quantized", name
    for name in ("enc.norm1", "enc.norm2"):
        assert rows[name]["status"] == "float" and "LayerNorm" in rows[name]["reason"], name
    assert art.quantization.rewritten == ["enc"]
    loaded = edgeshrink.load(edgeshrink.save(art, tmp_path / "m.eshrink").path, model=Encoder())
    with torch.no_grad():
        assert torch.equal(loaded.model(x), art.model(x))
    result = edgeshrink.export(loaded, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    assert result.parity["within_tolerance"], result.parity
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "m.onnx").graph.initializer}
    # Linear layers on [batch, time, features] export as MatMul with their weight transposed (the head,
    # on [batch, features], as Gemm): integers either way
    for name, module, quantizer in weight_quantizers(art.model):
        stored = inits[f"{name}.weight_quantized"]
        codes = quantizer.integers(module.weight.detach()).numpy().astype(np.int8)
        assert stored.dtype == np.int8, name
        np.testing.assert_array_equal(stored if name == "head" else stored.T, codes)
    assert {n for n, _, _ in weight_quantizers(art.model)} == set(art.quantization.bits)
