"""Quantization on the layers sequence models use: a Linear applied to [batch, time, features], and a
transformer encoder layer (attention, LayerNorm, GELU) that stays float with its reasons listed."""

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


def test_transformer_int8_lists_what_stays_float_and_exports_integer_weights(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(32, 12, 8)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(Encoder().eval(), example_input=x[:1]), parse_stage({"type": "quantize"}), ctx)
    rows = {r["name"]: r for r in art.records[-1].layers}
    assert rows["embed"]["status"] == rows["head"]["status"] == "quantized"
    for name in ("enc.self_attn", "enc.linear1", "enc.linear2", "enc.norm1", "enc.norm2"):
        assert rows[name]["status"] == "float" and rows[name]["reason"], name
    assert "runs inside enc" in rows["enc.linear1"]["reason"]
    assert set(art.quantization.bits) == {"embed", "head"}
    loaded = edgeshrink.load(edgeshrink.save(art, tmp_path / "m.eshrink").path, model=Encoder())
    with torch.no_grad():
        assert torch.equal(loaded.model(x), art.model(x))
    result = edgeshrink.export(loaded, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    assert result.parity["within_tolerance"], result.parity
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "m.onnx").graph.initializer}
    # embed runs on [batch, time, features]: exported as MatMul with its weight transposed, still integers
    codes = weight_quantizers(art.model)
    embed = next(q for n, _, q in codes if n == "embed")
    stored = inits["embed.weight_quantized"]
    assert stored.dtype == np.int8 and stored.shape == (8, 32)
    w = art.model.get_submodule("embed").weight.detach()
    np.testing.assert_array_equal(stored.T, embed.integers(w).numpy().astype(np.int8))
