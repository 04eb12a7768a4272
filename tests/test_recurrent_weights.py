"""Recurrent layers (GRU, LSTM) under int8: float compute, weights stored as int8 codes per row.

Oracles: the rows' codes and scales recomputed with numpy from the float weights, the float model's own
weights (kept bit for bit when asked), and the loaded model against the saved one."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.errors import ExportError
from edgeshrink.io.reader import read_stored
from edgeshrink.io.storage import SCALE_SUFFIX
from edgeshrink.runtimes.onnxruntime import make_session
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.train import Progress, fit


class Embedder(nn.Module):
    """A 3-layer LSTM speaker-embedding model: no classes, a 32-number output."""

    def __init__(s, cell=nn.LSTM):
        super().__init__()
        s.rnn = cell(12, 48, num_layers=3, batch_first=True)
        s.proj = nn.Linear(48, 32)

    def forward(s, x):
        return s.proj(s.rnn(x)[0][:, -1])


def _quantize(model, x, tmp_path, **settings):
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    stage = parse_stage({"type": "quantize", "calibration": "minmax", **settings})
    art = apply_stage(Artifact(model.eval(), example_input=x[:1]), stage, ctx)
    return art, edgeshrink.save(art, tmp_path / "m.eshrink").path


def _rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes per row and their scales, from the float weights."""
    scale = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127
    return np.clip(np.round(w / scale[:, None]), -127, 127), scale


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_recurrent_weights_are_stored_as_int8_rows_and_load_back_exactly(cell, tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(cell), torch.randn(32, 7, 12)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    art, path = _quantize(model, x, tmp_path)
    names = [n for n in model.rnn._flat_weights_names if n.startswith("weight_")]
    assert sorted(art.quantization.recurrent) == sorted(f"rnn.{n}" for n in names)
    stored = read_stored(path).state
    for n in names:
        key = f"rnn.{n}"
        assert stored[key].dtype == torch.int8
        codes, scale = _rows(original[key].numpy())
        np.testing.assert_array_equal(stored[key].numpy(), codes)
        np.testing.assert_allclose(stored[key + SCALE_SUFFIX].numpy(), scale, rtol=1e-6)
    row = next(r for r in art.records[-1].layers if r["name"] == "rnn")
    assert row["status"] == "float" and row["weight_bits"] == 8 and "8-bit codes" in row["reason"]
    assert any("weight matrices stored as 8-bit codes" in note for note in art.records[-1].notes)
    loaded = edgeshrink.load(path, model=Embedder(cell))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), art.model(x))


def test_an_int8_lstm_embedder_is_smaller_than_its_fp16_file_and_exports_within_tolerance(tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(), torch.randn(32, 7, 12)
    art, path = _quantize(model, x, tmp_path)
    half = apply_stage(Artifact(model, example_input=x[:1]), parse_stage({"type": "half"}), StageContext(None, None))
    half_bytes = edgeshrink.save(half, tmp_path / "h.eshrink").path.stat().st_size
    weights = sum(p.numel() for n, p in model.named_parameters() if "weight" in n)
    assert path.stat().st_size < 0.6 * half_bytes  # int8 rows against fp16 values: about half
    assert path.stat().st_size < 1.3 * weights  # about one byte per weight, scales and biases besides
    exported = edgeshrink.export(edgeshrink.load(path, model=Embedder()), tmp_path / "m.onnx", verify_data=[x])
    assert exported.parity["within_tolerance"], exported.parity


def test_recurrent_weights_float_keeps_the_trained_values(tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(nn.GRU), torch.randn(16, 5, 12)
    original = {k: v.detach().clone() for k, v in model.rnn.state_dict().items()}
    art, path = _quantize(model, x, tmp_path, recurrent_weights="float")
    assert art.quantization.recurrent == {}
    stored = read_stored(path).state
    for key, value in original.items():
        assert stored[f"rnn.{key}"].dtype == torch.float32
        assert torch.equal(stored[f"rnn.{key}"], value)


def test_quantization_aware_training_keeps_recurrent_weights_on_their_grid(tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(nn.GRU), torch.randn(32, 5, 12)
    target = torch.randn(32, 32)

    def finetune(m, cfg, label):
        loss = lambda net, inputs, labels: ((net(inputs) - labels) ** 2).mean()  # noqa: E731
        return fit(m, [(x, target)], cfg, stage=label, loss_fn=loss, progress=Progress(False))

    ctx = StageContext(finetune, None, example_input=x[:1], calibration=[(x, None)])
    stage = parse_stage({"type": "quantize", "calibration": "minmax", "finetune": {"epochs": 2, "lr": 1e-2}})
    art = apply_stage(Artifact(model.eval(), example_input=x[:1]), stage, ctx)
    path = edgeshrink.save(art, tmp_path / "q.eshrink").path  # refuses weights off their grid
    loaded = edgeshrink.load(path, model=Embedder(nn.GRU))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), art.model(x))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_onnx_int8_recurrent_weights_compute_what_the_float_file_computes(bidirectional, tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(nn.GRU), torch.randn(16, 5, 12)
    model.rnn = nn.GRU(12, 48, num_layers=2, batch_first=True, bidirectional=bidirectional)
    model.proj = nn.Linear(96 if bidirectional else 48, 32)
    art, _ = _quantize(model, x, tmp_path)
    plain = edgeshrink.export(art, tmp_path / "f.onnx", verify_data=[x], activation_type="uint8")
    small = edgeshrink.export(
        art, tmp_path / "i.onnx", verify_data=[x], activation_type="uint8", recurrent_weights="int8"
    )
    assert small.parity["within_tolerance"], small.parity
    graph = onnx.load(str(tmp_path / "i.onnx")).graph
    floats = sum(numpy_helper.to_array(i).size for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    weights = sum(p.numel() for n, p in model.rnn.named_parameters() if n.startswith("weight"))
    assert floats < weights / 4  # only biases and scales stay float
    assert (tmp_path / "i.onnx").stat().st_size < 0.5 * (tmp_path / "f.onnx").stat().st_size
    a = make_session((tmp_path / "f.onnx").read_bytes(), 1).run(None, {"input": x.numpy()})[0]
    b = make_session((tmp_path / "i.onnx").read_bytes(), 1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_array_equal(a, b)
    assert plain.parity["within_tolerance"]


def test_int8_recurrent_weights_are_refused_where_there_are_none(tmp_path):
    torch.manual_seed(0)
    model, x = Embedder(nn.GRU), torch.randn(16, 5, 12)
    art, _ = _quantize(model, x, tmp_path, recurrent_weights="float")
    with pytest.raises(ExportError, match="has none"):
        edgeshrink.export(art, tmp_path / "i.onnx", verify_data=[x], recurrent_weights="int8")
    assert not (tmp_path / "i.onnx").exists()


def test_an_lstm_with_a_projection_is_refused_by_onnx_in_one_line_and_profiled_without_it(tmp_path):
    """ONNX's LSTM has no output projection; PyTorch's exporter wrote a graph ONNX Runtime failed on at run time
    (profile crashed inside ONNX Runtime). The LiteRT file is verified against PyTorch."""

    class Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, batch_first=True, proj_size=4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    torch.manual_seed(0)
    model, x = Projected().eval(), torch.randn(16, 6, 8)
    with pytest.raises(ExportError, match=r"lstm: an LSTM with proj_size=4 has no ONNX equivalent") as err:
        edgeshrink.export(model, tmp_path / "m.onnx", example_input=x)
    assert not (tmp_path / "m.onnx").exists() and "\n" not in str(err.value)
    profile = edgeshrink.profile(model, example_input=x[:1])
    assert "pytorch" in profile.latency and "onnxruntime" not in profile.latency
    assert any("no ONNX Runtime latency" in note and "proj_size" in note for note in profile.notes), profile.notes
    tflite = edgeshrink.export(model, tmp_path / "m.tflite", verify_data=[x])
    assert tflite.parity["within_tolerance"], tflite.parity
