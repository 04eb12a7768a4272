"""Quantization and export on the layers edge models are built from: Conv1d, grouped and depthwise
Conv2d, BatchNorm, LayerNorm, attention and transformer encoders, GRU, LSTM, Embedding, GELU / SiLU /
Hardswish / Hardsigmoid, residual add and squeeze-excite multiply. Each model goes through int8, w4a8
and fp16, is saved and loaded bit-exact, and exports to ONNX verified
in the runtime (TFLite for int8, the integer path devices run; fp16 TFLite is covered by the recipe
contract on digits). Never a crash: what cannot be quantized stays float with its reason."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.errors import ExportError
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage


class Conv1dNet(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Conv1d(8, 16, 3, padding=1)
        s.bn = nn.BatchNorm1d(16)
        s.fc = nn.Linear(16, 4)

    def forward(s, x):
        return s.fc(F.relu(s.bn(s.c(x))).mean(-1))


class Grouped(nn.Module):
    def __init__(s):
        super().__init__()
        s.a = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        s.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        s.fc = nn.Linear(8, 4)

    def forward(s, x):
        return s.fc(F.silu(s.dw(F.gelu(s.a(x)))).mean((2, 3)))


class SE(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Conv2d(4, 8, 3, padding=1)
        s.s1 = nn.Conv2d(8, 2, 1)
        s.s2 = nn.Conv2d(2, 8, 1)
        s.fc = nn.Linear(8, 4)

    def forward(s, x):
        h = F.hardswish(s.c(x))
        g = F.hardsigmoid(s.s2(F.relu(s.s1(h.mean((2, 3), keepdim=True)))))
        return s.fc((h * g + h).mean((2, 3)))


class LN(nn.Module):
    def __init__(s):
        super().__init__()
        s.a = nn.Linear(8, 16)
        s.n = nn.LayerNorm(16)
        s.b = nn.Linear(16, 4)

    def forward(s, x):
        return s.b(F.gelu(s.n(s.a(x))))


class MHA(nn.Module):
    def __init__(s):
        super().__init__()
        s.e = nn.Linear(8, 16)
        s.m = nn.MultiheadAttention(16, 2, batch_first=True)
        s.h = nn.Linear(16, 4)

    def forward(s, x):
        h = s.e(x)
        return s.h(s.m(h, h, h)[0].mean(1))


class Enc(nn.Module):
    def __init__(s):
        super().__init__()
        s.e = nn.Linear(8, 16)
        s.t = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, 0.0, batch_first=True), 2)
        s.h = nn.Linear(16, 4)

    def forward(s, x):
        return s.h(s.t(s.e(x)).mean(1))


class GRU(nn.Module):
    def __init__(s):
        super().__init__()
        s.g = nn.GRU(8, 16, batch_first=True)
        s.h = nn.Linear(16, 4)

    def forward(s, x):
        return s.h(s.g(x)[0][:, -1])


class LSTM(nn.Module):
    def __init__(s):
        super().__init__()
        s.l = nn.LSTM(8, 16, num_layers=2, batch_first=True)
        s.h = nn.Linear(16, 4)

    def forward(s, x):
        return s.h(s.l(x)[0][:, -1])


class Emb(nn.Module):
    def __init__(s):
        super().__init__()
        s.e = nn.Embedding(50, 16)
        s.h = nn.Linear(16, 4)

    def forward(s, x):
        return s.h(s.e(x).mean(1))


MODELS = [
    (Conv1dNet, lambda n: torch.randn(n, 8, 20)),
    (Grouped, lambda n: torch.randn(n, 4, 8, 8)),
    (SE, lambda n: torch.randn(n, 4, 8, 8)),
    (LN, lambda n: torch.randn(n, 8)),
    (MHA, lambda n: torch.randn(n, 6, 8)),
    (Enc, lambda n: torch.randn(n, 6, 8)),
    (GRU, lambda n: torch.randn(n, 6, 8)),
    (LSTM, lambda n: torch.randn(n, 6, 8)),
    (Emb, lambda n: torch.randint(0, 50, (n, 6))),
]
STAGES = {
    "int8": {"type": "quantize", "calibration": "minmax"},
    "w4a8": {"type": "quantize", "weight_bits": 4, "group_size": 8, "calibration": "minmax"},
    "fp16": {"type": "half"},
}
CASES = [(cls, make, stage) for cls, make in MODELS for stage in STAGES]


@pytest.mark.parametrize("cls, make, stage", CASES, ids=[f"{c.__name__}-{s}" for c, _, s in CASES])
def test_layer_family_quantizes_loads_and_exports(cls, make, stage, tmp_path):
    torch.manual_seed(0)
    x = make(32)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(cls().eval(), example_input=x[:1]), parse_stage(STAGES[stage]), ctx)
    for row in art.records[-1].layers:
        assert row["status"] == "quantized" or row["reason"], row  # every float layer says why
    loaded = edgeshrink.load(edgeshrink.save(art, tmp_path / "m.eshrink").path, model=cls())
    with torch.no_grad():
        assert torch.equal(loaded.model(x), art.model(x))
    onnx = edgeshrink.export(loaded, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    assert onnx.parity["within_tolerance"], onnx.parity
    if stage == "w4a8":  # blocked 4-bit weights: a stated limitation of TFLite, refused in one line
        with pytest.raises(ExportError, match="no TFLite equivalent"):
            edgeshrink.export(loaded, tmp_path / "m.tflite", verify_data=[x])
        return
    if stage == "int8":
        tflite = edgeshrink.export(loaded, tmp_path / "m.tflite", verify_data=[x])
        assert tflite.parity["within_tolerance"], tflite.parity
