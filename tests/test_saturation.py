"""The 16-bit pair-sum replay (quant/saturation.py) against ONNX Runtime's own integer kernels on this CPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.fakequant import WeightQuant
from edgeshrink.quant.saturation import _grids, _rows, _weight_rows, overflow_excess


def _session(nodes, inputs, inits, out_type):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", out_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_matmul_accumulators_match_onnx_runtime_int32_outputs():
    """MatMulInteger returns MLAS's int32 accumulators: exact products plus the predicted pair saturation
    where this CPU's kernels saturate, exact elsewhere."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 37), dtype=np.uint8)
    a[:, :8] = 255  # large codes meeting large weights: pairs that leave 16 bits
    b = rng.integers(-127, 128, (37, 24), dtype=np.int8)
    b[:8, :12] = 127
    inits = [numpy_helper.from_array(b, "b")]
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    a_info = helper.make_tensor_value_info("a", TensorProto.UINT8, [64, 37])
    runtime = _session([node], [a_info], inits, TensorProto.INT32)
    got = runtime.run(None, {"a": a})[0].astype(np.int64)
    exact = a.astype(np.int64) @ b.astype(np.int64)
    excess, count = overflow_excess(torch.from_numpy(a).float(), torch.from_numpy(b.T.copy()).float())
    assert count > 0
    expected = exact + excess.numpy().astype(np.int64) if int8_weights_saturate() else exact
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_pairs_follow_the_runtime_order(channels):
    """Two weights at 127 meeting 255-codes: the replay predicts an overflow exactly for the pairs ONNX
    Runtime's QLinearConv saturates (its output is half the exact one)."""
    if not int8_weights_saturate():
        pytest.skip("this CPU's int8 kernels do not saturate: nothing to compare")
    conv = nn.Conv2d(channels, 4, 3)
    taps = channels * 9
    for i in range(taps):
        for j in range(i + 1, taps):
            w = np.zeros((4, channels, 3, 3), np.int8)
            w.reshape(4, -1)[:, [i, j]] = 127
            inits = [
                numpy_helper.from_array(w, "w"),
                numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                numpy_helper.from_array(np.array(0, np.uint8), "z"),
                numpy_helper.from_array(np.array(0, np.int8), "wz"),
                numpy_helper.from_array(np.array(1000.0, np.float32), "ys"),
            ]
            node = helper.make_node("QLinearConv", ["x", "one", "z", "w", "one", "wz", "ys", "z"], ["y"])
            x_info = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, 5, 5])
            x = np.full((1, channels, 5, 5), 255, np.uint8)
            y = _session([node], [x_info], inits, TensorProto.UINT8).run(None, {"x": x})[0]
            saturated = int(y.reshape(-1)[0]) < 2 * 127 * 255 // 1000  # 32 (clipped pair) instead of 64
            rows = _rows(conv, torch.from_numpy(x).float())[0]
            _, count = overflow_excess(rows, _weight_rows(conv, torch.from_numpy(w).float())[0])
            assert (count > 0) == saturated, (i, j)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_replay_grid_is_the_quantizers_own(per_tensor):
    """The replay judges the codes and scales the file will store: the layer's own quantizer grid, one grid
    for the whole tensor when it is shared (per tensor), also across the groups of a grouped conv."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    with torch.no_grad():
        conv.weight[:3] *= 10  # the groups' ranges differ: a per-group grid would differ from the tensor's
    quantizer = WeightQuant(conv.weight.detach(), bits=8, per_tensor=per_tensor)
    parametrize.register_parametrization(conv, "weight", quantizer)
    grids = _grids(conv, quantizer)
    weight = conv.parametrizations.weight.original
    stored = _weight_rows(conv, quantizer.integers(weight))
    dequantized = _weight_rows(conv, conv.weight.detach())
    scales = quantizer.scale.chunk(2)
    for grid, codes, values, scale in zip(grids, stored, dequantized, scales, strict=True):
        assert torch.equal(grid.full_codes, codes)
        assert torch.equal(grid.full_scale, scale)
        torch.testing.assert_close(grid.full, values, rtol=0, atol=0)
        assert grid.reduced.abs().amax() <= grid.full.abs().amax()
