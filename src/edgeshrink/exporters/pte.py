"""`--format pte`: an ExecuTorch program (.pte) with the XNNPACK delegate, verified in `executorch.runtime`.

Modes (`quantize`):
- `none`: fp32, every op XNNPACK takes runs in its float kernels;
- `int8`: XNNPACK's int8 kernels with edgeshrink's own scales and zero points: the fake-quantized model is
  written in the form PyTorch's PT2E quantization leaves (decomposed int8 quantize/dequantize pairs,
  per-channel int8 weight constants, folded by torchao's `constant_fold`), which the XNNPACK partitioner
  lowers to quantized ops. A float model is first quantized here on the calibration batches;
- `auto`: `int8` for a model edgeshrink quantized, `none` otherwise.
Inputs and outputs stay float (the file quantizes and dequantizes at its edges). Ops XNNPACK does not take
run in ExecuTorch's portable kernels; the export lists them. The file is written at batch 1.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch import nn

from edgeshrink.errors import ExportError
from edgeshrink.exporters.base import Built, Exporter, Runner, as_input, register_exporter
from edgeshrink.exporters.onnx_build import output_step
from edgeshrink.exporters.reference import int8_reference
from edgeshrink.exporters.tflite_build import litert_int8_copy
from edgeshrink.quant.half import is_half
from edgeshrink.quant.prepare import is_quantized
from edgeshrink.runtimes.executorch import ExecuTorchSession, require_executorch
from edgeshrink.runtimes.litert import quiet
from edgeshrink.weights import baked_copy

MODES = ("auto", "none", "int8")
PRECISION = {"none": "fp32", "int8": "int8"}
MIN_TOP1_AGREEMENT = {"none": 99.5, "int8": 99.0}
DELEGATE_CALL = "executorch_call_delegate"


def resolve_mode(model: nn.Module, quantize: str) -> str:
    if is_half(model):
        raise ExportError(
            "ExecuTorch export writes fp32 or int8 programs and this model computes in float16: export the model "
            "from before the half stage, or use --format tflite (float16 weights)"
        )
    quantized = is_quantized(model)
    if quantize == "auto":
        return "int8" if quantized else "none"
    if quantized and quantize != "int8":
        raise ExportError(
            f"this model is already quantized by edgeshrink; --quantize {quantize} would throw its scales away: "
            "use --quantize int8 (or auto), or export the model from before the quantize stage"
        )
    return quantize


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[-400:]}"


def _duplicate_dequantize(module: torch.fx.GraphModule) -> None:
    """One dequantize node per consumer, as PT2E's convert leaves them (torchao's DuplicateDQPass only copies
    for consumers carrying its quantizer's annotations, which edgeshrink's graph does not have): a dequantize
    shared by two ops would put their XNNPACK partitions in a cycle (a squeeze-excite gate's mean and mul)."""
    dequantize = {
        torch.ops.quantized_decomposed.dequantize_per_tensor.default,
        torch.ops.quantized_decomposed.dequantize_per_channel.default,
    }
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in dequantize:
            continue
        for user in list(node.users)[1:]:
            with graph.inserting_after(node):
                copy = graph.node_copy(node)
            user.replace_input_with(node, copy)
    module.recompile()


def _pt2e_form(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """What PT2E's convert leaves, which the XNNPACK partitioner expects: one dequantize per consumer and
    each weight's quantize folded into an int8 constant (torchao's constant_fold)."""
    from torchao.quantization.pt2e.constant_fold import constant_fold
    from torchao.quantization.pt2e.quantize_pt2e import _quant_node_constraint

    _duplicate_dequantize(module)
    constant_fold(module, _quant_node_constraint)
    return module


def lower(model: nn.Module, example: torch.Tensor, fold_weights: bool) -> tuple[bytes, Counter]:
    """(.pte bytes, ops left outside the XNNPACK delegate) for `model` at the example's shape.

    `fold_weights`: fold each weight's quantize op into an int8 constant first (torchao's constant_fold, as
    PT2E's convert does), so the partitioner sees int8 weights behind their dequantize ops."""
    try:
        with quiet(), torch.no_grad():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            program = torch.export.export(model, (example,))
            if fold_weights:
                program = torch.export.export(_pt2e_form(program.module()), (example,))
            try:
                edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            except AssertionError as exc:
                if "dependency cycles" not in str(exc):
                    raise
                # the partitioner's merged groups would depend on each other through an op it leaves outside
                # (a squeeze-excite gate around a portable mean): one delegate call per op instead
                edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner(per_op_mode=True)])
            outside = Counter(
                getattr(node.target, "__name__", str(node.target)).removesuffix(".default")
                for node in edge.exported_program().graph.nodes
                if node.op == "call_function"
                and DELEGATE_CALL not in str(node.target)
                and "getitem" not in str(node.target)
            )
            return bytes(edge.to_executorch().buffer), outside
    except Exception as exc:  # torch.export and the lowering raise many types; the reason is in the text
        raise ExportError(f"ExecuTorch could not lower the model: {_short(exc)}") from None


def _outside_note(outside: Counter) -> list[str]:
    layout = sum(n for op, n in outside.items() if "dim_order" in op)
    compute = {op: n for op, n in outside.items() if "dim_order" not in op}
    if not compute:
        copies = f" (plus {layout} memory-layout copies at its edges)" if layout else ""
        return [f"every op runs in the XNNPACK delegate{copies}"]
    ops = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(compute.items()))
    copies = f"; {layout} memory-layout copies" if layout else ""
    return [f"outside the XNNPACK delegate (ExecuTorch's portable kernels): {ops}{copies}"]


@register_exporter
class PTEExporter(Exporter):
    name = "pte"
    suffix = ".pte"
    runtime = "ExecuTorch (XNNPACK)"
    description = "an ExecuTorch .pte with the XNNPACK delegate, fp32 or int8, verified in executorch.runtime"
    options = {"quantize": MODES}

    def require(self) -> None:
        require_executorch(f"--format {self.name}")

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        mode = resolve_mode(model, options["quantize"])
        example = as_input(example[:1])
        notes: list[str] = []
        if mode == "int8":
            reference = int8_reference(model, calibration, notes)
            ready, more = litert_int8_copy(reference, runtime="XNNPACK", file=".pte")
            notes += more
        else:
            reference = model
            ready = baked_copy(model).float().eval()
        data, outside = lower(ready, example, fold_weights=mode == "int8")
        with torch.no_grad():
            output = reference(example)
        io = {"input": {"shape": list(example.shape), "dtype": str(example.dtype).removeprefix("torch.")}}
        io["output"] = {"shape": list(output.shape), "dtype": "float32"}  # float outputs, batch 1
        return Built(
            data,
            reference,
            PRECISION[mode],
            activation_type="int8" if mode == "int8" else None,
            io=io,
            notes=notes + _outside_note(outside),
            step=output_step(reference) if mode == "int8" else None,
            min_agreement=MIN_TOP1_AGREEMENT[mode],
            extra={"ops_outside_delegate": dict(outside)},
        )

    def runner(self, data: bytes, threads: int) -> Runner:
        return ExecuTorchSession(data, threads).run
