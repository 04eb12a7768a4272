"""Export a (compressed) PyTorch model to one self-contained ONNX file and prove it computes the same.

- float models: the PyTorch exporter's graph (BatchNorm folded), fp32 or fp16 weights;
- quantized models: QDQ, with edgeshrink's own scales and zero points: int8 (or sub-byte, opset 21)
  weight initializers, int32 biases, and uint8 (U8S8) or int8 (S8S8) activations. With
  `activation_type="auto"` both are built and timed in ONNX Runtime on this machine, and the faster is
  written (the choice and both timings are in the result).

Every export is verified by default: the file runs in ONNX Runtime on the given inputs, and the
result reports the largest output difference and the top-1 agreement with the PyTorch model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from edgeshrink.encode.container import atomic_write
from edgeshrink.errors import ExportError
from edgeshrink.exporters.qdq import QuantizedWeight, rewrite_weights, set_activation_type
from edgeshrink.exporters.runtime import int8_weights_saturate, make_session, run_session, time_interleaved
from edgeshrink.exporters.verify import export_inputs, parity, require_agreement
from edgeshrink.quant.prepare import activation_quantizers, is_quantized, weight_quantizers
from edgeshrink.weights import baked_copy

MIN_TOP1_AGREEMENT = 99.5


@dataclass
class ExportResult:
    """The written file, what it holds, and how closely it matches the PyTorch model."""

    path: Path
    bytes: int
    precision: str  # "fp32" | "fp16" | "int8" | "w4a8" ...
    activation_type: str | None = None
    parity: dict | None = None
    layers: list[dict] = field(default_factory=list)
    kernel_choice: dict | None = None
    io: dict | None = None  # input/output shapes, types and integer (scale, zero point) where the file has them
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        return out


def _precision(model: nn.Module) -> str:
    if is_quantized(model):
        bits = sorted({q.bits for _, _, q in weight_quantizers(model)})
        return "int8" if bits == [8] else "w" + "/".join(str(b) for b in bits) + "a8"
    dtypes = {p.dtype for p in model.parameters()}
    return "fp16" if dtypes == {torch.float16} else "fp32"


def parametrize_weight(module: nn.Module) -> torch.Tensor:
    """The computed weight of a parametrized layer (errors inside a parametrization surface as they are,
    not as the AttributeError that attribute access would turn them into)."""
    return type(module).weight.fget(module)


def _quantized_weights(model: nn.Module) -> list[QuantizedWeight]:
    out = []
    with torch.no_grad():
        for name, module, quantizer in weight_quantizers(model):
            weight = parametrize_weight(module)  # the fake-quantized weight; refreshes the scale
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


def _torch_export(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    """The PyTorch exporter (dynamo) with a dynamic batch dimension, to one in-memory model."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = example[:1].repeat(2, *([1] * (example.dim() - 1)))  # a batch of 1 would be specialised
    quiet = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=True,
                    external_data=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_shapes=({0: batch},),
                    custom_translation_table=_qdq_translation() if opset >= 21 else None,
                )
        except Exception as exc:
            first = " ".join(str(exc).split())[-900:]
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from None
        finally:
            quiet.setLevel(level)
        return _strip_debug_info(onnx.load(str(path)))


def _strip_debug_info(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node stack traces and recorded shapes: a quarter of a small file, and
    nothing a runtime reads."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    return model


def to_onnx(
    model: nn.Module, example_input: torch.Tensor, activation_type: str = "uint8"
) -> tuple[onnx.ModelProto, list[dict]]:
    """Build the ONNX model (not written, not verified); returns it with the per-layer storage rows."""
    model = model.eval()
    if not is_quantized(model):
        return _torch_export(baked_copy(model).eval(), example_input, 18), []
    weights = _quantized_weights(model)
    plain = baked_copy(model).eval()
    for _, quantizer in activation_quantizers(plain):
        quantizer.constants = (float(quantizer.scale), int(quantizer.zero_point))
    opset = 21  # QuantizeLinear/DequantizeLinear with INT4 and blocked scales
    graph = _torch_export(plain, example_input, opset)
    rows = rewrite_weights(graph, weights)
    set_activation_type(graph, activation_type)
    return graph, rows


def _float_twin(model: nn.Module, example_input: torch.Tensor) -> onnx.ModelProto:
    """The same graph without quantizers (float kernels), to time against the integer one."""
    plain = baked_copy(model).eval()
    for _, quantizer in activation_quantizers(plain):
        quantizer.mode = "off"
    return _torch_export(plain, example_input, 18)


def _output_step(model: nn.Module) -> float | None:
    quantizers = activation_quantizers(model)
    return float(quantizers[-1][1].scale) if quantizers else None


def export(
    model: nn.Module | object,
    path: str | Path,
    example_input: torch.Tensor | None = None,
    *,
    verify_data: Iterable[torch.Tensor] | None = None,
    verify: bool = True,
    activation_type: str = "auto",
    threads: int = 2,
) -> ExportResult:
    """Export `model` (an nn.Module or a CompressResult) to `path` as ONNX and verify it in ONNX Runtime
    on `verify_data` (batches of inputs; default: the example input). Raises ExportError when the
    file's top-1 agreement with PyTorch is below 99.5% (verify=True)."""
    model, example_input, batches = export_inputs(model, example_input, verify_data)
    precision = _precision(model)
    kernel_choice = None
    if is_quantized(model):
        if activation_type == "auto":
            uint8_graph, rows = to_onnx(model, example_input, "uint8")
            int8_graph = onnx.ModelProto()
            int8_graph.CopyFrom(uint8_graph)
            set_activation_type(int8_graph, "int8")  # same grid, zero points shifted: no second export
            candidates = {"uint8": (uint8_graph, rows), "int8": (int8_graph, rows)}
            sessions = {t: make_session(g.SerializeToString(), threads) for t, (g, _) in candidates.items()}
            sessions["float"] = make_session(_float_twin(model, example_input).SerializeToString(), threads)
            x = example_input[:1].numpy()
            timings = time_interleaved(sessions, x, runs=30, warmup=5, threads=threads)
            float_ms = timings.pop("float").median_ms
            activation_type = min(timings, key=lambda t: timings[t].median_ms)
            best_ms = timings[activation_type].median_ms
            kernel_choice = {
                "chosen": {"uint8": "U8S8", "int8": "S8S8"}[activation_type],
                "measured_batch1_ms": {("U8S8" if t == "uint8" else "S8S8"): v.median_ms for t, v in timings.items()},
                "float_batch1_ms": float_ms,
                "note": "uint8 and int8 activations are the same grid; the faster kernels on this machine were kept",
            }
            if best_ms > float_ms:
                why = (
                    "this CPU has no int8 dot-product instructions (VNNI), so integer convolutions run no faster "
                    "than float ones and the quantize/dequantize work is added on top"
                    if int8_weights_saturate()
                    else "the quantize/dequantize work outweighs the integer kernels"
                )
                kernel_choice["recommendation"] = (
                    f"int8 is slower than float on this machine for this model ({best_ms:.3f} ms vs "
                    f"{float_ms:.3f} ms at batch 1): {why}; ship the float model unless size matters more than speed"
                )
            graph, rows = candidates[activation_type]
        else:
            graph, rows = to_onnx(model, example_input, activation_type)
    else:
        graph, rows = to_onnx(model, example_input)
        activation_type = None
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX model is invalid: {str(exc).splitlines()[0]}") from None
    data = graph.SerializeToString()
    result = ExportResult(Path(path), len(data), precision, activation_type, None, rows, kernel_choice)
    if verify:
        session = make_session(data, threads)
        inputs = batches or [example_input]
        result.parity = parity(model, lambda x: run_session(session, x), inputs, _output_step(model))
        require_agreement(result.parity, MIN_TOP1_AGREEMENT, "ONNX Runtime")
    atomic_write(Path(path), data)
    return result
