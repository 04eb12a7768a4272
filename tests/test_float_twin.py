"""The float twin that the ONNX exporter times the integer file against, taken from the QDQ graph
(exporters/qdq_strip.py): checked against PyTorch's float copy of the model and against the twin the
PyTorch exporter writes, in ONNX Runtime; graphs it does not recognise, and graphs whose operators the
float export's opset lacks, give None."""

import numpy as np
import onnx
import pytest
import torch
from helpers import SmallNet
from onnx import TensorProto, helper

from edgeshrink.exporters.onnx_build import FLOAT_OPSET, float_twin, to_onnx
from edgeshrink.exporters.qdq_strip import float_twin_from_qdq
from edgeshrink.models import create_model
from edgeshrink.quant.export_copy import export_copy
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize
from edgeshrink.runtimes.onnxruntime import make_session, run_session

CASES = {  # name -> (model factory, input shape, weight bits, settings, recurrent weights in the file)
    "conv-linear-int8": (SmallNet, (1, 8, 8), 8, PTQSettings(), "float"),
    "conv-linear-int4-blocked": (SmallNet, (1, 8, 8), 4, PTQSettings(group_size=4), "float"),
    "crnn-int8-rows": (lambda: create_model("row-gru", input_shape=(1, 8, 8)), (1, 8, 8), 8, PTQSettings(), "int8"),
}


def _run(model: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    return run_session(make_session(model.SerializeToString(), threads=1), x.numpy())


@pytest.mark.parametrize("case", CASES)
def test_the_twin_is_the_float_model_on_the_same_graph(case):
    factory, shape, bits, settings, recurrent = CASES[case]
    torch.manual_seed(0)
    x = torch.randn(32, *shape)
    quantized, _ = post_training_quantize(factory().eval(), [(x, None)], bits, settings)
    graph, _ = to_onnx(quantized.eval(), x[:1], "uint8", recurrent)
    before = graph.SerializeToString()
    twin = float_twin_from_qdq(graph, FLOAT_OPSET)
    assert twin is not None and graph.SerializeToString() == before  # the QDQ graph is left as it was
    assert not {n.op_type for n in twin.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    integers = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.INT32}
    assert not [i.name for i in twin.graph.initializer if i.data_type in integers]
    with torch.no_grad():
        reference = export_copy(quantized, "float")(x).numpy()  # the fake-quantized weights, no quantizers
    np.testing.assert_allclose(_run(twin, x), reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_run(twin, x), _run(float_twin(quantized, x[:1]), x), rtol=1e-5, atol=1e-5)


def _model(nodes, inputs, initializers=()) -> onnx.ModelProto:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [out], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_graphs_it_does_not_recognise_give_none():
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    # a DequantizeLinear of a graph input (an integer input, no QuantizeLinear before it): not a pair to remove
    dq_input = _model(
        [helper.make_node("DequantizeLinear", ["x", "s"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.INT8, [2])],
        [scale],
    )
    assert float_twin_from_qdq(dq_input, FLOAT_OPSET) is None
    # quantizers inside a subgraph are not looked at: the whole graph is refused
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [], [z])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    with_if = _model(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
        [cond, helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    )
    assert float_twin_from_qdq(with_if, FLOAT_OPSET) is None


def test_an_operator_the_float_opset_lacks_gives_none():
    """The transformer's GELU is one Gelu operator in the QDQ graph (opset 21) and Erf, Mul and Add in the
    float export (opset 18): a twin with Gelu would be faster than the float file it stands for."""
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    quantized, _ = post_training_quantize(create_model("row-transformer", input_shape=(1, 8, 8)).eval(), [(x, None)])
    graph, _ = to_onnx(quantized.eval(), x[:1], "uint8")
    exported = {n.op_type for n in float_twin(quantized, x[:1]).graph.node}
    assert "Gelu" in {n.op_type for n in graph.graph.node} and "Gelu" not in exported and "Erf" in exported
    assert float_twin_from_qdq(graph, FLOAT_OPSET) is None
    assert float_twin_from_qdq(graph, 21) is not None  # the same graph, against a float export at its own opset
