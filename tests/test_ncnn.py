"""ncnn export (--format ncnn): the .param / .bin pair pnnx writes, loaded from disk by ncnn itself, computes what
the PyTorch model computes (fp32 to float precision, fp16 weights to their rounding), stores 2 or 4 bytes per
weight, and refuses what it cannot reproduce without writing anything."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SmallNet, loaders
from torch import nn

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

import edgeshrink  # noqa: E402
from edgeshrink.errors import ExportError  # noqa: E402
from edgeshrink.quant.half import HalfPrecision  # noqa: E402
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize  # noqa: E402
from edgeshrink.runtimes.ncnn import float32_compute  # noqa: E402
from edgeshrink.train import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    train, val = loaders()
    torch.manual_seed(0)
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
    return model.eval(), train, next(iter(val))[0]


def _run_files(param, weights, x: torch.Tensor) -> np.ndarray:
    """The written pair through ncnn's own loader (from the paths, not edgeshrink's session)."""
    import ncnn

    net = ncnn.Net()
    float32_compute(net.opt)  # ncnn would store activations as float16 on this CPU
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    out = []
    for example in x.numpy():
        extractor = net.create_extractor()
        extractor.input("in0", ncnn.Mat(np.ascontiguousarray(example)).clone())  # ncnn's own memory: see below
        out.append(np.array(extractor.extract("out0")[1]))
    return np.stack(out)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("precision, width, tolerance", [("fp32", 4, 1e-4), ("fp16", 2, 2e-2)])
def test_network_computes_what_torch_computes(trained, tmp_path, precision, width, tolerance):
    model, _, x = trained
    path = tmp_path / "m.ncnn.param"
    result = edgeshrink.export(model, path, format="ncnn", verify_data=[x], precision=precision)
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run_files(path, tmp_path / "m.ncnn.bin", x)
    assert np.abs(got - expected).max() <= tolerance * (1 + np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()
    weights = (tmp_path / "m.ncnn.bin").stat().st_size
    assert width * _params(model) <= weights <= width * _params(model) + 64 * len(list(model.parameters()))
    assert result.bytes == path.stat().st_size + weights and result.precision == precision
    assert result.files == [str(path), str(tmp_path / "m.ncnn.bin")]


def test_pruned_weights_are_stored_dense_and_said_so(trained, tmp_path):
    model, _, x = trained
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned.fc1.weight[pruned.fc1.weight.abs() < pruned.fc1.weight.abs().median()] = 0
    dense = edgeshrink.export(model, tmp_path / "d.ncnn.param", format="ncnn", verify_data=[x])
    sparse = edgeshrink.export(pruned, tmp_path / "s.ncnn.param", format="ncnn", verify_data=[x])
    assert sparse.extra["bin_bytes"] == dense.extra["bin_bytes"]
    assert any("stored dense" in n for n in sparse.notes)


def _fp32_file_error(model: nn.Module, tmp_path) -> float:
    """Largest |ncnn - PyTorch| over 16 random inputs, the fp32 pair read back through ncnn's own loader."""
    torch.manual_seed(0)
    model, x = model.eval(), torch.randn(16, 1, 8, 8)
    edgeshrink.export(model, tmp_path / "m.ncnn.param", format="ncnn", verify_data=[x], precision="fp32")
    with torch.no_grad():
        expected = model(x).numpy()
    return float(np.abs(_run_files(tmp_path / "m.ncnn.param", tmp_path / "m.ncnn.bin", x) - expected).max())


def test_activations_of_mobile_blocks_convert(tmp_path):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.dw = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            h = F.hardswish(self.dw(F.silu(self.conv(x))))
            h = h * F.hardsigmoid(h.mean((2, 3), keepdim=True))
            return self.fc(h.mean((2, 3)))

    assert _fp32_file_error(Block(), tmp_path) < 1e-4


class Normalized(nn.Module):
    """The input normalised by buffers first: ncnn runs `x - mean` in place on the input blob."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.1))
        self.register_buffer("std", torch.tensor(0.3))
        self.conv, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(F.relu(self.conv((x - self.mean) / self.std)).mean((2, 3)))


def test_a_first_layer_working_in_place_runs(tmp_path):
    """A BinaryOp with a scalar works in place; on a Mat over numpy's memory it crashed the whole process
    (segmentation fault), so the input is copied into ncnn's own Mat. Oracle: PyTorch's outputs."""
    assert _fp32_file_error(Normalized(), tmp_path) < 1e-4


def test_a_float16_model_exports_its_weights(trained, tmp_path):
    model, _, x = trained
    half = HalfPrecision(copy.deepcopy(model))
    result = edgeshrink.export(half, tmp_path / "h.ncnn.param", format="ncnn", verify_data=[x])
    assert result.precision == "fp16" and result.parity["top1_agreement"] >= 99.5


def test_what_it_cannot_reproduce_is_refused_and_nothing_written(trained, tmp_path):
    model, train, x = trained
    q, _ = post_training_quantize(model, [(a, b) for a, b in train], 8, PTQSettings(calibration="percentile"))
    with pytest.raises(ExportError, match="ncnn2int8"):
        edgeshrink.export(q, tmp_path / "q.ncnn.param", format="ncnn", verify_data=[x])
    with pytest.raises(ExportError, match="precision must be one of"):
        edgeshrink.export(model, tmp_path / "q.ncnn.param", format="ncnn", verify_data=[x], precision="int8")
    tokens = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(ExportError, match="float inputs only"):
        edgeshrink.export(tokens, tmp_path / "t.ncnn.param", torch.zeros(1, 3, dtype=torch.long), format="ncnn")
    assert not list(tmp_path.iterdir())


def test_missing_package_names_the_extra(monkeypatch, trained, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pnnx" else real(name, *a))
    model, _, x = trained
    with pytest.raises(ExportError, match=r"pip install 'edgeshrink\[ncnn\]'"):
        edgeshrink.export(model, tmp_path / "m.ncnn.param", format="ncnn", verify_data=[x])
