"""Spatial means are written as GlobalAveragePool, and only those: ONNX Runtime's outputs against torch's
and numpy's (the oracles)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeshrink.exporters.onnx_build import to_onnx
from edgeshrink.exporters.onnx_simplify import simplify
from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.passes import calibrate
from edgeshrink.quant.prepare import prepare
from edgeshrink.runtimes.onnxruntime import make_session


class SqueezeExcite(nn.Module):
    """Two means over the spatial axes (one through AdaptiveAvgPool2d, one through mean) and one that is
    not global (over the channels), which must stay a ReduceMean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.gate = nn.Linear(4, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 + 144, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.gate(y.mean((-2, -1), keepdim=True).flatten(1)))
        y = y * gate[:, :, None, None]
        channels = y.mean(1, keepdim=True).flatten(1)  # not a global pool
        return self.head(torch.cat([self.pool(y).flatten(1), channels], 1))


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString(), 1).run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("quantized", [False, True])
def test_spatial_means_become_global_average_pools_and_compute_the_same(quantized):
    torch.manual_seed(0)
    model = SqueezeExcite().eval()
    x = torch.randn(16, 1, 14, 14)
    if quantized:
        model, _ = prepare(model, {"conv": 8, "gate": 8, "head": 8}, reduced_range=int8_weights_saturate())
        calibrate(model, [(x, None)])
    graph, _ = to_onnx(model.eval(), x[:1])
    assert _ops(graph).count("GlobalAveragePool") == 2 and _ops(graph).count("ReduceMean") == 1
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run(graph, x.numpy())
    assert got.shape == expected.shape
    if quantized:  # the fake-quantized model within a few output steps
        assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _mean_graph(axes: list[int], shape: list, keepdims: int) -> onnx.ModelProto:
    constant = numpy_helper.from_array(np.array(axes, dtype=np.int64), "axes")
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=keepdims)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [constant],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("axes", "keepdims", "shape", "rewritten"),
    [
        ([-2, -1], 1, ["batch", 3, 4, 5], True),
        ([2, 3], 1, ["batch", 3, 4, 5], True),
        ([2], 1, ["batch", 3, 4, 5], False),
        ([1, 2, 3], 1, ["batch", 3, 4, 5], False),
        ([2, 3], 0, ["batch", 3, 4, 5], False),
        ([-1], 1, ["batch", 3, 4], True),
    ],
)
def test_only_means_that_equal_global_average_pool_are_rewritten(axes, keepdims, shape, rewritten):
    x = np.random.default_rng(0).random([5, *shape[1:]], dtype=np.float32)
    model = _mean_graph(axes, shape, keepdims)
    before = _run(model, x)
    np.testing.assert_allclose(before, x.mean(axis=tuple(axes), keepdims=bool(keepdims)), rtol=1e-6)
    assert simplify(model) == int(rewritten)
    assert ("GlobalAveragePool" in _ops(model)) is rewritten
    assert (not model.graph.initializer) is rewritten  # the axes constant nothing reads any more
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-6, atol=1e-7)
