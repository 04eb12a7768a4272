"""Attention decomposed into plain layers (quant/attention.py): the same outputs as torch's modules,
integer projections in ONNX Runtime, a file that loads back, and masks that keep it float."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import as_artifact
from onnx import numpy_helper
from torch import nn

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.quant.attention import TraceableAttention, TraceableEncoder, decompose, traceable
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage


class SelfAttention(nn.Module):
    def __init__(self, dim=16, heads=4, batch_first=True):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.head = nn.Linear(16, 3)
        self.register_buffer("causal", torch.triu(torch.ones(5, 5, dtype=torch.bool), 1))

    def forward(self, x):
        return self.head(self.attn(x, x, x, attn_mask=self.causal)[0].mean(1))


@pytest.mark.parametrize("batch_first", [True, False])
def test_traceable_attention_matches_torch(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()  # zero biases at init would hide a wrong split
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    ours = TraceableAttention(mha).eval()
    with torch.no_grad():
        expected, weights = mha(x, x, x)
        got, got_weights = ours(x, x, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_weights, weights, rtol=1e-5, atol=1e-6)


def test_cross_attention_with_other_key_and_value_widths_matches_torch():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, kdim=10, vdim=6, batch_first=True).eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 9, 10), torch.randn(2, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(TraceableAttention(mha)(q, k, v)[0], mha(q, k, v)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first, activation", [(True, "gelu"), (False, "relu"), (False, nn.GELU())])
def test_traceable_encoder_matches_torch(norm_first, activation):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )
    encoder = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(16), enable_nested_tensor=False).eval()
    x = torch.randn(3, 6, 16)
    ours = TraceableEncoder(encoder).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), encoder(x), rtol=1e-5, atol=1e-5)
    assert {n for n, _ in ours.named_modules()} >= {"layers.1.self_attn.q_proj", "layers.1.linear2", "norm"}


def test_decompose_replaces_only_the_outermost_module_and_what_a_file_names():
    model = nn.Sequential(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, batch_first=True), 1))
    model.add_module("extra", nn.MultiheadAttention(8, 2))
    assert decompose(model) == ["0", "extra"]
    assert isinstance(model[0], TraceableEncoder) and isinstance(model.extra, TraceableAttention)
    fresh = nn.Sequential(nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, batch_first=True), 1))
    with pytest.raises(edgeshrink.EdgeshrinkError, match="extra"):
        decompose(fresh, ["0", "extra"])


def _fake_quant(v: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.clip(np.round(v / scale) + zero_point, 0, 255) - zero_point) * scale


def test_quantized_attention_in_onnx_runtime_matches_numpy_from_the_exported_scales(tmp_path):
    torch.manual_seed(0)
    model = SelfAttention().eval()
    x = torch.randn(16, 6, 16)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    cfg = parse_stage({"type": "quantize", "bias_correction": False, "weight_range": "auto"})
    art = apply_stage(Artifact(model, example_input=x[:1]), cfg, ctx)
    assert art.quantization.rewritten == ["attn"]
    edgeshrink.export(art, tmp_path / "a.onnx", verify_data=[x])
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "a.onnx").graph.initializer}

    def weight(layer):  # integers x per-channel scales, as stored in the file (transposed for MatMul)
        ints, scale = inits[f"attn.{layer}.weight_quantized"], inits[f"attn.{layer}.weight_scale"]
        w = ints.astype(np.float64) * (scale.reshape(1, -1) if ints.shape[1] == scale.size else scale.reshape(-1, 1))
        return w if ints.shape[1] == scale.size else w.T  # [in, out]

    act = {n: (float(m.scale), int(m.zero_point)) for n, m in art.model.named_modules() if hasattr(m, "zero_point")}
    order = list(act)  # graph order: input, q, k, v, attention mix, output
    bias = {
        n: art.model.get_submodule(f"attn.{n}").bias.detach().double().numpy()
        for n in ("q_proj", "k_proj", "v_proj", "out_proj")
    }
    xq = _fake_quant(x.double().numpy(), *act[order[0]])
    q, k, v = (
        _fake_quant(xq @ weight(n) + bias[n], *act[order[i + 1]]) for i, n in enumerate(("q_proj", "k_proj", "v_proj"))
    )
    heads = lambda t: t.reshape(16, 6, 4, 4).transpose(0, 2, 1, 3)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) * 0.5
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mixed = _fake_quant((probs @ heads(v)).transpose(0, 2, 1, 3).reshape(16, 6, 16), *act[order[4]])
    expected = _fake_quant(mixed @ weight("out_proj") + bias["out_proj"], *act[order[5]])
    session = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    step = act[order[5]][0]
    assert np.abs(got - expected).max() <= step + 1e-6  # at most one output step (rounding at a boundary)
    assert np.mean(np.abs(got - expected) < 1e-6) > 0.95


def test_masked_attention_stays_float_with_its_reason_and_still_exports(tmp_path):
    torch.manual_seed(0)
    model = Masked().eval()
    same, names, why = traceable(model)
    assert same is model and names == [] and "not decomposed" in why
    x = torch.randn(8, 5, 16)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(model, example_input=x[:1]), parse_stage({"type": "quantize"}), ctx)
    rows = {r["name"]: r for r in art.records[-1].layers}
    assert rows["attn"]["status"] == "float" and rows["attn"]["reason"]
    assert rows["head"]["status"] == "quantized"
    assert any("attention kept in float" in note for note in art.records[-1].notes)
    result = edgeshrink.export(art, tmp_path / "m.onnx", verify_data=[x])
    assert result.parity["within_tolerance"], result.parity


class FunctionalAttention(nn.Module):
    """F.scaled_dot_product_attention on 3-D (batch, length, dim) tensors, the form without a head dimension."""

    def __init__(self, causal: bool = False):
        super().__init__()
        self.qkv, self.head, self.causal = nn.Linear(16, 48), nn.Linear(16, 3), causal

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.head(nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal).mean(1))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_functional_attention_on_3d_tensors_exports_to_onnx(causal, int8, tmp_path):
    """PyTorch's ONNX translation of scaled_dot_product_attention takes 4-D tensors only; the 3-D call is
    exported as the 4-D one with one head and computes what PyTorch does (oracle: the model's own outputs)."""
    torch.manual_seed(0)
    x = torch.randn(16, 5, 16)
    art = as_artifact(FunctionalAttention(causal), x, int8)
    result = edgeshrink.export(art, tmp_path / "m.onnx", verify_data=[x])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = result.model(x).numpy()
    assert np.abs(got - expected).max() <= (result.parity["tolerance"] if int8 else 1e-5)
