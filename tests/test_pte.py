"""ExecuTorch export (--format pte): the .pte program, loaded with executorch.runtime itself, computes what the
PyTorch model computes (fp32 to float precision, int8 to an output step of the fake-quantized model), stores
int8 weights, runs in the XNNPACK delegate (squeeze-excite gates included), lists the ops it leaves outside,
and refuses what it cannot reproduce without writing anything."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SmallNet, loaders
from torch import nn

pytest.importorskip("executorch")

import edgeshrink  # noqa: E402
from edgeshrink.errors import ExportError, RuntimeLoadError  # noqa: E402
from edgeshrink.exporters.onnx_build import output_step  # noqa: E402
from edgeshrink.quant.half import HalfPrecision  # noqa: E402
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize  # noqa: E402
from edgeshrink.runtimes.executorch import ExecuTorchSession  # noqa: E402
from edgeshrink.train import TrainConfig, fit  # noqa: E402


class Gated(nn.Module):
    """Conv -> squeeze-excite gate (one activation feeds both the mean and the multiply) -> global mean -> fc."""

    def __init__(self, keepdim: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.reduce, self.expand = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.fc = nn.Linear(8, 3)
        self.keepdim = keepdim

    def forward(self, x):
        h = F.hardswish(self.conv(x))
        h = h * F.hardsigmoid(self.expand(F.relu(self.reduce(h.mean((2, 3), keepdim=True)))))
        pooled = h.mean((2, 3), keepdim=True).flatten(1) if self.keepdim else h.mean((2, 3))
        return self.fc(pooled)


@pytest.fixture(scope="module")
def trained():
    train, val = loaders()
    torch.manual_seed(0)
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
    x = next(iter(val))[0]
    return model.eval(), train, x


def _run_file(path, x: torch.Tensor) -> np.ndarray:
    """The written file through ExecuTorch's own runtime, one example at a time (not edgeshrink's session)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(path).load_method("forward")
    return torch.cat([method.execute([x[i : i + 1]])[0] for i in range(x.shape[0])]).numpy()


def _compute(ops: dict) -> dict:
    """Ops outside the delegate that compute (not the layout copies ExecuTorch puts at its edges)."""
    return {op: n for op, n in ops.items() if "dim_order" not in op}


def _quantized(model, train):
    q, _ = post_training_quantize(model, [(x, y) for x, y in train], 8, PTQSettings(calibration="percentile"))
    return q


def test_fp32_program_computes_what_torch_computes(trained, tmp_path):
    model, _, x = trained
    result = edgeshrink.export(model, tmp_path / "m.pte", format="pte", verify_data=[x])
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(_run_file(tmp_path / "m.pte", x) - expected).max() < 1e-4
    assert result.precision == "fp32" and result.runtime.startswith("ExecuTorch")
    assert result.notes == ["every op runs in the XNNPACK delegate"] and result.extra["ops_outside_delegate"] == {}
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert result.bytes >= weight_bytes  # float weights


def test_int8_program_matches_the_fake_quantized_model_to_one_step(trained, tmp_path):
    model, train, x = trained
    q = _quantized(model, train)
    fp32 = edgeshrink.export(model, tmp_path / "f.pte", format="pte", verify_data=[x])
    result = edgeshrink.export(q, tmp_path / "q.pte", format="pte", verify_data=[x])  # auto: int8
    with torch.no_grad():
        expected = q(x).numpy()
    steps = np.abs(_run_file(tmp_path / "q.pte", x) - expected).max() / output_step(q)
    assert result.precision == "int8" and steps <= 1.0 + 1e-3
    weight_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert result.bytes < fp32.bytes - 0.6 * weight_bytes  # one byte per weight instead of four, plus scales


def test_float_model_to_int8_is_calibrated_here_and_needs_data(trained, tmp_path):
    model, train, x = trained
    with pytest.raises(ExportError, match="needs calibration data"):
        edgeshrink.export(model, tmp_path / "a.pte", format="pte", verify_data=[x], quantize="int8")
    result = edgeshrink.export(
        model, tmp_path / "a.pte", format="pte", verify_data=[x], quantize="int8", calibration=[train.inputs[:96]]
    )
    assert result.precision == "int8" and any(n.startswith("quantized here") for n in result.notes)
    assert result.parity["top1_agreement"] >= 99.0


def test_squeeze_excite_gate_lowers_whole_to_xnnpack_int8(tmp_path):
    torch.manual_seed(0)
    model = Gated().eval()
    x = torch.randn(32, 1, 8, 8)
    q, _ = post_training_quantize(model, [(x, None)], 8, PTQSettings(calibration="percentile"))
    result = edgeshrink.export(q, tmp_path / "g.pte", format="pte", verify_data=[x])
    assert _compute(result.extra["ops_outside_delegate"]) == {}
    with torch.no_grad():
        expected = q(x).numpy()
    assert np.abs(_run_file(tmp_path / "g.pte", x) - expected).max() <= output_step(q) * (1 + 1e-3)


def test_ops_outside_the_delegate_are_listed(tmp_path):
    torch.manual_seed(0)
    model = Gated(keepdim=False).eval()  # XNNPACK's mean keeps the reduced dimensions only
    x = torch.randn(8, 1, 8, 8)
    result = edgeshrink.export(model, tmp_path / "o.pte", format="pte", verify_data=[x])
    assert _compute(result.extra["ops_outside_delegate"]) == {"aten.mean.dim": 1}
    assert any("outside the XNNPACK delegate" in n and "aten.mean.dim" in n for n in result.notes)


def test_what_it_cannot_reproduce_is_refused_and_nothing_written(trained, tmp_path):
    model, train, x = trained
    with pytest.raises(ExportError, match="float16"):
        edgeshrink.export(HalfPrecision(copy.deepcopy(model)), tmp_path / "h.pte", format="pte", verify_data=[x])
    with pytest.raises(ExportError, match="already quantized"):
        edgeshrink.export(_quantized(model, train), tmp_path / "n.pte", format="pte", verify_data=[x], quantize="none")
    with pytest.raises(ExportError, match="quantize must be one of"):
        edgeshrink.export(model, tmp_path / "d.pte", format="pte", verify_data=[x], quantize="dynamic")
    assert not list(tmp_path.iterdir())


def test_a_damaged_program_does_not_load():
    with pytest.raises(RuntimeLoadError, match="ExecuTorch cannot load"):
        ExecuTorchSession(b"not a program" * 8)


def test_session_sets_the_thread_pool(trained, tmp_path):
    from executorch.extension.pybindings import portable_lib

    model, _, x = trained
    edgeshrink.export(model, tmp_path / "t.pte", format="pte", verify_data=[x])
    data = (tmp_path / "t.pte").read_bytes()
    try:
        session = ExecuTorchSession(data, threads=1)
        assert portable_lib._threadpool_get_thread_count() == 1
        assert session.run(x.numpy()).shape == (x.shape[0], 3)
    finally:
        ExecuTorchSession(data, threads=2)
    assert portable_lib._threadpool_get_thread_count() == 2


def test_missing_package_names_the_extra(monkeypatch, trained, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    model, _, x = trained
    with pytest.raises(ExportError, match=r"pip install 'edgeshrink\[executorch\]'"):
        edgeshrink.export(model, tmp_path / "m.pte", format="pte", verify_data=[x])


def test_on_a_board_a_run_folder_is_judged_by_its_newest_exported_file(trained, tmp_path):
    import os

    from edgeshrink.exporters.base import summary_path

    model, train, x = trained
    q = _quantized(model, train)
    edgeshrink.save(q, tmp_path / "model.eshrink", example_input=x[:1])
    before = edgeshrink.profile(tmp_path / "model.eshrink", device="raspberry-pi-4", model=SmallNet(), latency=False)
    assert before.device.fit.deployment.file.endswith("model.eshrink")
    assert any("--format pte" in n for n in before.notes)
    art = edgeshrink.load(tmp_path / "model.eshrink", model=SmallNet())
    result = edgeshrink.export(art, tmp_path / "model.pte", format="pte", verify_data=[x])
    assert json.loads(summary_path(tmp_path / "model.pte").read_text())["precision"] == result.precision == "int8"
    after = edgeshrink.profile(tmp_path / "model.eshrink", device="raspberry-pi-4", model=SmallNet(), latency=False)
    d = after.device.fit.deployment
    assert d.file.endswith("model.pte") and d.runtime.startswith("ExecuTorch")
    assert d.flash_bytes == d.ram_weight_bytes == (tmp_path / "model.pte").stat().st_size
    assert after.source.kind == "container" and after.device.fit.flash.need == d.flash_bytes
    advice = edgeshrink.advise(tmp_path / "model.eshrink", device="raspberry-pi-4", network="wifi", model=SmallNet())
    assert "model.pte" in advice.reasons[0]
    stale = (tmp_path / "model.eshrink").stat().st_mtime - 10  # exported before the container was rewritten
    os.utime(tmp_path / "model.pte", (stale, stale))
    again = edgeshrink.profile(tmp_path / "model.eshrink", device="raspberry-pi-4", model=SmallNet(), latency=False)
    assert again.device.fit.deployment.file.endswith("model.eshrink")
