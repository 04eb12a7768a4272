"""Batch-flattening Reshapes are written as Flatten and spatial means as GlobalAveragePool, and only
those: ONNX Runtime's outputs against torch's and numpy's (the oracles)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeshrink.exporters.onnx_build import to_onnx
from edgeshrink.exporters.onnx_simplify import simplify
from edgeshrink.quant.passes import calibrate
from edgeshrink.quant.prepare import prepare
from edgeshrink.runtimes.onnxruntime import make_session


class SplitsBatch(nn.Module):
    """A view that is not a batch flatten: each sample becomes two rows."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        return self.fc(x.flatten(1)).view(-1, 3)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString(), 1).run(None, {model.graph.input[0].name: x})[0]


@pytest.mark.parametrize("quantized", [False, True])
@pytest.mark.parametrize("pool", [False, True])
def test_a_conv_net_flatten_and_mean_are_rewritten_and_compute_the_same(quantized, pool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(144, 5)).eval()
    pooled = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    model = pooled.eval() if pool else model
    x = torch.randn(16, 1, 14, 14)
    if quantized:
        model, _ = prepare(model, {"0": 8, "4": 8})
        calibrate(model, [(x, None)])
    graph, _ = to_onnx(model.eval(), x[:1])
    assert "Flatten" in _ops(graph) and "Reshape" not in _ops(graph)
    assert ("GlobalAveragePool" in _ops(graph)) is pool and "ReduceMean" not in _ops(graph)
    with torch.no_grad():
        expected = model(x).numpy()
    got = _run(graph, x.numpy())
    assert got.shape == expected.shape
    # float: to rounding; quantized: the fake-quantized model within one output step (here a loose bound)
    assert np.abs(got - expected).max() <= (1e-5 if not quantized else 0.1 * np.abs(expected).max())


def test_a_view_that_splits_the_batch_stays_a_reshape():
    torch.manual_seed(0)
    model = SplitsBatch().eval()
    x = torch.randn(4, 2, 4)
    graph, _ = to_onnx(model, x[:1])
    assert "Reshape" in _ops(graph)
    with torch.no_grad():
        np.testing.assert_allclose(_run(graph, x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-6)


def _one_node_graph(op: str, second: list[int], shape: list, **attrs) -> onnx.ModelProto:
    constant = numpy_helper.from_array(np.array(second, dtype=np.int64), "second")
    node = helper.make_node(op, ["x", "second"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [constant],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("target", "allowzero", "rewritten"),
    [([-1, 12], 1, True), ([0, 12], 0, True), ([-1, 6], 0, False), ([0, 12], 1, False), ([-1, 3, 4], 0, False)],
)
def test_only_reshapes_that_equal_flatten_are_rewritten(target, allowzero, rewritten):
    x = np.random.default_rng(0).random((5, 3, 4), dtype=np.float32)
    model = _one_node_graph("Reshape", target, ["batch", 3, 4], allowzero=allowzero)
    before = None if (target[0] == 0 and allowzero) else _run(model, x)  # a literal 0 dim cannot hold 5x3x4
    assert simplify(model)["Flatten"] == int(rewritten)
    assert ("Flatten" in _ops(model)) is rewritten
    if rewritten:
        assert not model.graph.initializer  # the shape constant nothing reads any more
        np.testing.assert_array_equal(_run(model, x), x.reshape(5, 12))
    if before is not None:
        np.testing.assert_array_equal(_run(model, x), before)


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
    model = _one_node_graph("ReduceMean", axes, shape, keepdims=keepdims)
    before = _run(model, x)
    np.testing.assert_allclose(before, x.mean(axis=tuple(axes), keepdims=bool(keepdims)), rtol=1e-6)
    assert simplify(model)["GlobalAveragePool"] == int(rewritten)
    assert ("GlobalAveragePool" in _ops(model)) is rewritten
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-6, atol=1e-7)
