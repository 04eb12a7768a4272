import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgeshrink.mac_count import count_macs
from edgeshrink.measure.energy import DRAM_PJ, OPS_PJ, estimate_energy, sram_access_pj
from edgeshrink.measure.graph import from_torch
from edgeshrink.measure.macs import mac_summary
from edgeshrink.measure.memory import Step, peak_activation_memory, peak_bytes
from edgeshrink.tasks.zoo import create_model, list_models, model_entry
from edgeshrink.weights import attach_mask


def cpu_attention_macs(model: nn.Module, x: torch.Tensor) -> int:
    """What torch's FlopCounterMode leaves out: it has no rule for CPU flash attention (counted as 0
    FLOPs), so q.k^T and weights.v, 2 x batch x length^2 x dim per attention layer, from the inputs."""
    total = 0

    def hook(module, inputs, _output):
        nonlocal total
        batch, length, dim = inputs[0].shape
        total += 2 * batch * length * length * dim

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", list_models())
def test_dense_macs_match_torch_flop_counter(name):
    model = create_model(name).eval()
    x = torch.randn(1, *model_entry(name).input_shape)
    with FlopCounterMode(display=False) as counter:
        model(x)
    expected = counter.get_total_flops() // 2 + cpu_attention_macs(model, x)
    # the dispatch counter and the exported graph's walk apply one MAC model, torch's own rules
    assert count_macs(model, x.shape[1:]) == expected
    assert mac_summary(from_torch(model, x)).dense == expected


def test_nonzero_macs_count_each_kept_weight_once_per_output_position():
    torch.manual_seed(0)
    model = create_model("lenet5").eval()
    for module in (model.conv2, model.fc1):
        attach_mask(module, "weight", torch.rand_like(module.weight) > 0.7)
    macs = mac_summary(from_torch(model, torch.zeros(1, 1, 28, 28)))
    nnz = {n: int(torch.count_nonzero(getattr(model, n).weight)) for n in ("conv1", "conv2", "fc1", "fc2")}
    # output positions: conv1 24x24, conv2 8x8; linear layers one row at batch 1
    expected = nnz["conv1"] * 24 * 24 + nnz["conv2"] * 8 * 8 + nnz["fc1"] + nnz["fc2"]
    assert macs.nonzero == expected
    assert macs.dense == 20 * 25 * 576 + 50 * 500 * 64 + 800 * 500 + 500 * 10


def test_liveness_peak_on_a_hand_built_sequence():
    # x(4) -> a(8) -> b(2) -> c(16) = f(x, b); x lives until c, a dies after b.
    steps = [Step("a", ["a"], ["x"]), Step("b", ["b"], ["a"]), Step("c", ["c"], ["x", "b"])]
    sizes = {"x": 4, "a": 8, "b": 2, "c": 16}
    peak, at, live = peak_bytes(steps, sizes, ["x"], ["c"])
    # after a: x+a = 12; at b: x+a+b = 14, then a freed (6); at c: x+b+c = 22
    assert (peak, at, sorted(live)) == (22, "c", ["b", "c", "x"])


class Residual(nn.Module):
    def forward(self, x):  # x: 1000 floats = 4000 bytes
        a = torch.relu(x)
        b = a * 2
        c = b.view(1000)  # a view: no new storage, keeps b alive
        return torch.cat([x.view(1000), c])  # 8000 bytes


def test_peak_activation_memory_of_an_exported_graph():
    mem = peak_activation_memory(from_torch(Residual(), torch.randn(1, 1000)))
    # x 4000 + a 4000 -> b +4000 (12000), a freed -> cat +8000 with x, b live: 16000
    assert mem.peak_bytes == 16000
    assert mem.sum_bytes == 20000  # the naive sum overstates it
    assert mem.input_bytes == 4000


def export_onnx(model, x, path):
    from edgeshrink.exporters.onnx_build import to_onnx

    path.write_bytes(to_onnx(model, x)[0].SerializeToString())
    return path


def test_onnx_graph_agrees_with_torch_graph(tmp_path):
    from edgeshrink.measure.onnx_graph import from_onnx

    model = create_model("digits-cnn").eval()
    x = torch.randn(1, 1, 8, 8)
    g_torch = from_torch(model, x)
    g_onnx = from_onnx(export_onnx(model, x, tmp_path / "m.onnx"))
    assert mac_summary(g_onnx).dense == mac_summary(g_torch).dense
    assert peak_activation_memory(g_onnx).peak_bytes == peak_activation_memory(g_torch).peak_bytes


def test_sram_energy_follows_the_table():
    assert sram_access_pj(8 * 1024) == pytest.approx(10.0)
    assert sram_access_pj(1024 * 1024) == pytest.approx(100.0)
    assert sram_access_pj(32 * 1024) == pytest.approx(20.0, rel=0.05)  # the table's 32 KB figure
    assert sram_access_pj(1024) == pytest.approx(10.0)


def test_energy_formula_by_hand():
    macs, wbytes, moved, peak = 1000, 800, 160, 100
    e = estimate_energy(macs, wbytes, moved, peak, sram_bytes=8 * 1024, dtype="int8")
    compute = 1000 * (OPS_PJ["int8"]["mul"] + OPS_PJ["int8"]["add"])
    expected = compute + 100 * 10.0 + 20 * 10.0  # 100 weight words and 20 activation words from an 8 KB SRAM
    assert e.uj == pytest.approx(expected / 1e6)
    assert e.weights_from == "on-chip SRAM"
    big = estimate_energy(macs, 10**6, moved, peak, sram_bytes=8 * 1024)
    words = math.ceil(10**6 / 8)
    assert big.weights_from == "DRAM or flash"
    assert big.weights_uj == pytest.approx(words * sum(DRAM_PJ) / 2 / 1e6)
    assert "estimated" in big.provenance


def test_latency_measurements_state_their_conditions(tmp_path):
    from edgeshrink.measure.latency import measure_onnx, measure_torch

    model = create_model("lenet300").eval()
    x = torch.randn(1, 1, 28, 28)
    for t in (
        measure_torch(model, x, runs=5),
        measure_onnx(export_onnx(model, x, tmp_path / "m.onnx"), x.numpy(), runs=5),
    ):
        assert t.runs == 5 and t.threads == 1 and t.batch == 1
        assert 0 < t.median_ms <= t.p90_ms
        assert t.provenance.startswith("measured")
    assert np.isfinite(t.median_ms)


class Recurrent(nn.Module):
    def __init__(self, cell, **kwargs):
        super().__init__()
        self.rnn = cell(8, 12, num_layers=2, **kwargs)
        self.head = nn.Linear(12 * (2 if kwargs.get("bidirectional") else 1), 3)

    def forward(self, x):
        out = self.rnn(x)[0]
        return self.head(out[:, -1] if self.rnn.batch_first else out[-1])


@pytest.mark.parametrize(
    "cell, kwargs",
    [(nn.GRU, {"batch_first": True}), (nn.LSTM, {"bidirectional": True}), (nn.RNN, {"batch_first": True})],
    ids=["gru", "lstm-bidirectional", "rnn"],
)
def test_recurrent_layers_count_every_step(cell, kwargs, tmp_path):
    torch.manual_seed(0)
    model = Recurrent(cell, **kwargs).eval()
    x = torch.randn(2, 5, 8) if kwargs.get("batch_first") else torch.randn(5, 2, 8)
    # by definition: each step multiplies every weight matrix (input, hidden) of every layer and direction
    # with one vector per sequence; torch's FlopCounterMode has no rule for aten.lstm, so it is no oracle here
    steps, batch = 5, 2
    matrices = sum(p.numel() for p in model.rnn.parameters() if p.dim() == 2)
    expected = steps * batch * matrices + batch * model.head.weight.numel()
    macs = mac_summary(from_torch(model, x)).dense  # the exported graph keeps aten.gru / lstm as one op
    assert macs == expected
    if kwargs.get("batch_first"):  # count_macs feeds (batch, *shape)
        assert count_macs(model, x.shape[1:], batch_size=2) == expected
    else:
        assert count_macs(model, (2, 8), batch_size=5) == expected
