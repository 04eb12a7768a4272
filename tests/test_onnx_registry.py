"""The exporter's ATen -> ONNX table, built once per process (exporters/onnx_registry.py): each export gets
a copy equal to the table torch builds itself, what one export registers never reaches the next, torch's
classmethod is back after the block, and a quantized model's ONNX file is the same bytes either way."""

import contextlib

import pytest
import torch
from helpers import SmallNet, as_artifact
from torch.onnx._internal.exporter import _registration

from edgeshrink.exporters import onnx_build
from edgeshrink.exporters.onnx_registry import torchlib_registry_once

Registry = _registration.ONNXRegistry


def test_each_export_gets_a_fresh_copy_of_the_table_torch_builds():
    reference = Registry.from_torchlib(opset_version=21)  # torch's own build, outside the block
    with torchlib_registry_once():
        first = Registry.from_torchlib(opset_version=21)
        first.register_op(torch.ops.aten.relu.default, lambda x: x)
        second = Registry.from_torchlib(opset_version=21)
        older = Registry.from_torchlib(opset_version=18)
    assert first is not second and second.opset_version == 21 and older.opset_version == 18
    assert second.functions.keys() == reference.functions.keys()
    relu = torch.ops.aten.relu.default
    assert len(first.get_decomps(relu)) == len(reference.get_decomps(relu)) + 1 and first.get_decomps(relu)[0].is_custom
    assert [e.onnx_function for e in second.get_decomps(relu)] == [e.onnx_function for e in reference.get_decomps(relu)]
    assert not any(e.is_custom for entries in second.functions.values() for e in entries)


def test_torchs_classmethod_is_restored_even_after_an_error_or_a_nested_block():
    original = Registry.__dict__["from_torchlib"]
    with pytest.raises(RuntimeError), torchlib_registry_once():
        assert Registry.__dict__["from_torchlib"] is not original
        raise RuntimeError("export failed")
    assert Registry.__dict__["from_torchlib"] is original
    with torchlib_registry_once(), torchlib_registry_once():  # nested: re-enters, restores in order
        inner = Registry.from_torchlib(opset_version=18)
    assert Registry.__dict__["from_torchlib"] is original and inner.opset_version == 18 and inner.functions


def test_a_quantized_models_file_is_the_same_with_and_without_the_shared_table(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    model = as_artifact(SmallNet(), x, int8=True).model
    cached, _ = onnx_build.to_onnx(model, x[:2])
    monkeypatch.setattr(onnx_build, "torchlib_registry_once", contextlib.nullcontext)
    plain, _ = onnx_build.to_onnx(model, x[:2])
    assert any(n.op_type == "QuantizeLinear" for n in cached.graph.node)
    assert cached.SerializeToString() == plain.SerializeToString()
