"""ONNX export: parity with PyTorch in ONNX Runtime, integer arithmetic against numpy, every task's model."""

import numpy as np
import onnx
import pytest
import torch
from helpers import SmallNet, loaders
from onnx import helper, numpy_helper
from torch import nn

import edgeshrink
from edgeshrink.errors import ExportError
from edgeshrink.exporters.onnx import to_onnx
from edgeshrink.quant.passes import calibrate
from edgeshrink.quant.prepare import activation_quantizers, prepare
from edgeshrink.runtimes.onnxruntime import make_session


class OneConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("activation_type", ["uint8", "int8"])
def test_integer_output_equals_numpy_from_exported_scales(activation_type):
    torch.manual_seed(0)
    model = OneConv().eval()
    x = torch.randn(4, 3, 8, 8)
    qmodel, _ = prepare(model, {"conv": 8}, reduced_range=True)
    calibrate(qmodel, [(x, None)])
    graph, _ = to_onnx(qmodel, x[:1], activation_type)
    q_out = next(n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "conv2d")
    graph.graph.output.append(helper.make_empty_tensor_value_info(q_out.output[0]))
    session = make_session(graph.SerializeToString(), level="all")
    integer_out = session.run([q_out.output[0]], {"input": x.numpy()})[0].astype(np.int64)

    # numpy oracle, from the file's own initializers
    inits = _inits(graph)
    q_in = next(n for n in graph.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    s_x, z_x = float(inits[q_in.input[1]]), int(inits[q_in.input[2]])
    s_y, z_y = float(inits[q_out.input[1]]), int(inits[q_out.input[2]])
    w = inits["conv.weight_quantized"].astype(np.int64)
    s_w = inits["conv.weight_scale"].astype(np.float64)
    b = inits["conv.bias_quantized"].astype(np.int64)
    lo, hi = (0, 255) if activation_type == "uint8" else (-128, 127)
    xq = np.clip(np.round(x.numpy() / s_x) + z_x, lo, hi).astype(np.int64) - z_x
    acc = torch.nn.functional.conv2d(torch.from_numpy(xq).double(), torch.from_numpy(w).double(), padding=1).numpy()
    acc = acc + b[None, :, None, None]
    expected = np.clip(np.round(acc * (s_x * s_w)[None, :, None, None] / s_y) + z_y, lo, hi)
    assert np.abs(integer_out - expected).max() <= 1  # requantisation rounding of the runtime's fixed point
    assert (integer_out == expected).mean() >= 0.99


def test_exported_model_matches_fake_quant_torch_within_one_step(tmp_path):
    torch.manual_seed(0)
    model = OneConv().eval()
    x = torch.randn(16, 3, 8, 8)
    qmodel, _ = prepare(model, {"conv": 8}, reduced_range=True)
    calibrate(qmodel, [(x, None)])
    result = edgeshrink.export(qmodel, tmp_path / "q.onnx", x[:1], verify_data=[x], activation_type="uint8")
    step = float(activation_quantizers(qmodel)[-1][1].scale)
    assert result.parity["max_abs_diff"] <= step * 1.001


def test_fp32_export_matches_to_float_precision(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = loaders()[1].inputs
    result = edgeshrink.export(model, tmp_path / "m.onnx", verify_data=[x])
    assert result.precision == "fp32" and result.parity["max_abs_diff"] < 1e-4
    assert (tmp_path / "m.onnx").stat().st_size == result.bytes


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import edgeshrink.exporters.onnx as exporter

    model = SmallNet().eval()
    x = loaders()[1].inputs
    real = exporter.run_session
    monkeypatch.setattr(exporter, "run_session", lambda session, inputs: -real(session, inputs))  # a broken runtime
    target = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="verification failed.*not written"):
        edgeshrink.export(model, target, verify_data=[x])
    assert not target.exists()


@pytest.mark.parametrize("fastest", ["uint8", "int8", "float"])
def test_kernel_choice_follows_the_measurement(tmp_path, monkeypatch, fastest):
    """The activation type with the faster measured kernels is written; fp32 is recommended when faster."""
    import edgeshrink.exporters.onnx as exporter

    def fake_timings(graphs, inputs, runs, rounds, **_):
        return [{k: 1.0 if k == fastest else 2.0 for k in graphs}] * rounds

    monkeypatch.setattr(exporter, "time_in_new_sessions", fake_timings)
    torch.manual_seed(0)
    x = loaders()[1].inputs
    qmodel, _ = prepare(SmallNet().eval(), {"conv": 8, "fc1": 8, "fc2": 8}, reduced_range=True)
    calibrate(qmodel, [(x, None)])
    result = edgeshrink.export(qmodel, tmp_path / "m.onnx", verify_data=[x])
    written = onnx.load(tmp_path / "m.onnx")
    quantize = next(n for n in written.graph.node if n.op_type == "QuantizeLinear")
    zero_point = _inits(written)[quantize.input[2]]
    assert zero_point.dtype == (np.int8 if fastest == "int8" else np.uint8)
    assert result.activation_type == ("int8" if fastest == "int8" else "uint8")
    assert result.kernel_choice["chosen"] == ("S8S8" if fastest == "int8" else "U8S8")
    assert ("recommendation" in result.kernel_choice) == (fastest == "float")


def test_a_variant_onnx_runtime_refuses_is_dropped_and_a_file_it_refuses_is_not_written(tmp_path, monkeypatch):
    """ONNX Runtime's optimizer rejects some S8S8 graphs (a GRU net here once): auto keeps the variant that
    loads and says why; a file that does not load at all is an ExportError, with nothing written."""
    import edgeshrink.exporters.onnx as exporter
    from edgeshrink.errors import RuntimeLoadError

    real = exporter.make_session

    def refuse_int8(data, threads=2, **kw):
        graph = onnx.load_from_string(data)
        inits = _inits(graph)
        quantize = [n for n in graph.graph.node if n.op_type == "QuantizeLinear"]
        if any(inits[n.input[2]].dtype == np.int8 for n in quantize):  # int8 activations: refused
            raise RuntimeLoadError("ONNX Runtime cannot load the model: [TypeInferenceError] test")
        return real(data, threads, **kw)

    monkeypatch.setattr(exporter, "make_session", refuse_int8)
    torch.manual_seed(0)
    x = loaders()[1].inputs
    qmodel, _ = prepare(SmallNet().eval(), {"conv": 8, "fc1": 8, "fc2": 8})
    calibrate(qmodel, [(x, None)])
    result = edgeshrink.export(qmodel, tmp_path / "m.onnx", verify_data=[x])
    assert result.activation_type == "uint8" and "S8S8" in result.kernel_choice["refused"]
    target = tmp_path / "i.onnx"
    with pytest.raises(ExportError, match="does not load, nothing written.*TypeInferenceError"):
        edgeshrink.export(qmodel, target, verify_data=[x], activation_type="int8")
    assert not target.exists()


def test_w4_weights_are_int4_in_the_file(tmp_path):
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = loaders()[1].inputs
    qmodel, _ = prepare(model, {"conv": 8, "fc1": 4, "fc2": 4}, group_size=8)
    calibrate(qmodel, [(x, None)])
    result = edgeshrink.export(qmodel, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    graph = onnx.load(tmp_path / "m.onnx").graph
    types = {i.name: i.data_type for i in graph.initializer}
    assert types["fc1.weight_quantized"] == onnx.TensorProto.INT4
    assert types["conv.weight_quantized"] == onnx.TensorProto.INT8
    assert result.precision == "w4/8a8"


SHARED_POOL_SCRIPT = """
import sys, numpy as np, torch
from edgeshrink.errors import ConfigError
from edgeshrink.exporters.onnx import to_onnx
from edgeshrink.runtimes.onnxruntime import make_session, run_session
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten()).eval()
x = torch.randn(2, 3, 8, 8)
data = to_onnx(model, x[:1], "uint8")[0].SerializeToString()
own = run_session(make_session(data, threads=2), x.numpy())
shared = run_session(make_session(data, threads=2, pool="shared"), x.numpy())
np.testing.assert_allclose(shared, own, rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(shared, model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
make_session(data, threads=2, pool="shared")  # the same size again is fine
for kwargs in ({"threads": 1, "pool": "shared"}, {"threads": 2}):
    try:
        make_session(data, **kwargs)
    except ConfigError as exc:
        print("refused:", exc)
    else:
        sys.exit(f"{kwargs} was not refused")
"""


def test_shared_thread_pool_computes_the_same_and_refuses_what_onnx_runtime_cannot_do(tmp_path):
    # A process-wide ONNX Runtime setting: run in a fresh interpreter so this test process keeps its own pools.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHARED_POOL_SCRIPT], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    refusals = [line for line in done.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 2 and "pool has 2 threads" in refusals[0]
    assert "own thread pool" in refusals[1]


def test_new_sessions_time_every_graph_in_every_round(tmp_path):
    """time_in_new_sessions: one median per graph per round, from sessions that really ran the graph (a
    graph ONNX Runtime cannot run at this batch raises, as a kept session would)."""
    from edgeshrink.runtimes.onnxruntime import time_in_new_sessions

    torch.manual_seed(0)
    x = loaders()[1].inputs
    graph = to_onnx(SmallNet().eval(), x[:1])[0].SerializeToString()
    rounds = time_in_new_sessions({"a": graph, "b": graph}, x[:4].numpy(), runs=3, rounds=2, threads=1)
    assert len(rounds) == 2 and all(set(r) == {"a", "b"} and min(r.values()) > 0 for r in rounds)
    with pytest.raises(Exception):  # noqa: B017 - ONNX Runtime's own error for a wrong input shape
        time_in_new_sessions({"a": graph}, x[:4, :, :5].numpy(), runs=1, rounds=1, threads=1)
