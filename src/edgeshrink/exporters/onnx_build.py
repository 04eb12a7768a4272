"""Build ONNX models from (compressed) PyTorch models, in memory: the PyTorch exporter (dynamo) with a
dynamic batch dimension and, for quantized models, QDQ with edgeshrink's own integers and scales.

- float models: the exporter's graph (BatchNorm folded), fp32 or fp16 weights;
- quantized models: activation quantizers as QuantizeLinear/DequantizeLinear pairs (a custom op, so the
  batch dimension stays dynamic), weights rewritten into INT8/INT4 initializers with their
  per-channel (or blocked) scales and int32 biases (qdq.py);
- both: spatial means written as GlobalAveragePool, which ONNX Runtime runs as an integer kernel where
  the exporter's ReduceMean runs in float (onnx_simplify.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edgeshrink.errors import ExportError
from edgeshrink.exporters.onnx_registry import torchlib_registry_once
from edgeshrink.exporters.onnx_simplify import simplify
from edgeshrink.exporters.qdq import QuantizedWeight, rewrite_weights, set_activation_type
from edgeshrink.exporters.qdq_recurrent import store_recurrent_int8
from edgeshrink.quant.export_copy import export_copy
from edgeshrink.quant.prepare import activation_quantizers, is_quantized, weight_quantizers
from edgeshrink.quant.recurrent import recurrent_quantizers

FLOAT_OPSET = 18  # float models (and the float twin the integer file is timed against)
QDQ_OPSET = 21  # QuantizeLinear/DequantizeLinear with INT4 and blocked scales


def parametrize_weight(module: nn.Module) -> torch.Tensor:
    """The computed weight of a parametrized layer (errors inside a parametrization surface as they are,
    not as the AttributeError that attribute access would turn them into)."""
    return type(module).weight.fget(module)


def quantized_weights(model: nn.Module) -> list[QuantizedWeight]:
    """Each quantized layer's integer weights and scales, as the exported file stores them (the model
    is read in eval mode, where the scales are frozen: nothing changes)."""
    out = []
    with torch.no_grad():
        for name, module, quantizer in weight_quantizers(model):
            weight = parametrize_weight(module)  # the fake-quantized weight
            scale = quantizer.expanded_scale(weight)
            integers = torch.round(weight / scale).to(torch.int64).numpy()
            out.append(
                QuantizedWeight(name, integers, quantizer.scale.numpy().copy(), quantizer.bits, quantizer.group_size)
            )
    return out


def _qdq_translation():
    """ONNX for edgeshrink's fake-quantize op: QuantizeLinear then DequantizeLinear, uint8 zero point."""
    from onnxscript import opset21 as op

    def quantize_dequantize(x, scale: float, zero_point: int):
        s = op.Constant(value_float=scale)
        z = op.Cast(op.Constant(value_int=zero_point), to=onnx.TensorProto.UINT8)
        return op.DequantizeLinear(op.QuantizeLinear(x, s, z), s, z)

    return {torch.ops.edgeshrink.quantize_dequantize.default: quantize_dequantize}


def _refuse_projected_lstm(model: nn.Module) -> None:
    """ExportError for an LSTM with an output projection: ONNX's LSTM operator has none, and PyTorch's
    exporter writes a graph ONNX Runtime fails on at run time (its cell state gets the projected size)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.LSTM) and m.proj_size > 0:
            raise ExportError(
                f"{name}: an LSTM with proj_size={m.proj_size} has no ONNX equivalent (ONNX's LSTM has no output "
                "projection); use proj_size=0 with a Linear layer after the LSTM, or export to TFLite"
            )


def _torch_export(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    """The PyTorch exporter (dynamo) with a dynamic batch dimension, to one in-memory model."""
    _refuse_projected_lstm(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = example[:1].repeat(2, *([1] * (example.dim() - 1)))  # a batch of 1 would be specialised
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()), torchlib_registry_once():
                _export(model, example, path, opset, batch)
        except Exception as exc:
            first = " ".join(str(exc).split())[-900:]
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from None
        finally:
            quiet.setLevel(level)
        graph = _strip_debug_info(onnx.load(str(path)))
    simplify(graph)
    return graph


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int, batch) -> None:
    """torch.onnx.export; when its translation of scaled_dot_product_attention fails (it takes 4-D tensors
    only), again from a program in which 3-D attention is the 4-D call with one head."""
    options = {
        "dynamo": True,
        "external_data": False,
        "opset_version": opset,
        "input_names": ["input"],
        "output_names": ["output"],
        "custom_translation_table": _qdq_translation() if opset >= 21 else None,
    }
    try:
        torch.onnx.export(model, (example,), str(path), dynamic_shapes=({0: batch},), **options)
    except Exception as exc:
        if "scaled_dot_product_attention" not in str(exc):
            raise
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        program = program.run_decompositions({torch.ops.aten.scaled_dot_product_attention.default: _attention_4d})
        torch.onnx.export(program, (example,), str(path), **options)


def _attention_4d(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    """scaled_dot_product_attention on 3-D (batch, length, dim) tensors as the 4-D call with one head; other
    ranks as they are (NotImplemented leaves the operator in place)."""
    if not query.dim() == key.dim() == value.dim() == 3:
        return NotImplemented
    mask = attn_mask.unsqueeze(1) if attn_mask is not None and attn_mask.dim() == 3 else attn_mask
    q, k, v = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
    out = torch.ops.aten.scaled_dot_product_attention.default(
        q, k, v, mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
    )
    return out.squeeze(1)


def _strip_debug_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node stack traces and recorded shapes: a quarter of a small file, and
    nothing a runtime reads."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    return model


def to_onnx(
    model: nn.Module, example_input: torch.Tensor, activation_type: str = "uint8", recurrent_weights: str = "float"
) -> tuple[onnx.ModelProto, list[dict]]:
    """Build the ONNX model (not written, not verified); returns it with the per-layer storage rows.
    `recurrent_weights="int8"`: GRU/LSTM weights stored as int8 rows (qdq_recurrent.py; smaller, slower)."""
    model = model.eval()
    if not is_quantized(model):
        return _torch_export(export_copy(model, "float"), example_input, FLOAT_OPSET), []
    weights = quantized_weights(model)
    plain = export_copy(model, "onnx")
    graph = _torch_export(plain, example_input, QDQ_OPSET)
    rows = rewrite_weights(graph, weights)
    if recurrent_weights == "int8":
        scales = [q.scale.numpy() for _, _, _, q in recurrent_quantizers(model)]
        stored = store_recurrent_int8(graph, scales)
        rows += [{"layer": name, "weight": "INT8 rows (dequantized each run)", "bias": "float"} for name in stored]
    set_activation_type(graph, activation_type)
    return graph, rows


def float_twin(model: nn.Module, example_input: torch.Tensor) -> onnx.ModelProto:
    """The same graph without quantizers (float kernels), to time against the integer one."""
    return _torch_export(export_copy(model, "float"), example_input, FLOAT_OPSET)


def output_step(model: nn.Module) -> float | None:
    """The quantization step of the model's output (its last activation quantizer), None for float models."""
    quantizers = activation_quantizers(model)
    return float(quantizers[-1][1].scale) if quantizers else None
