"""`--format onnx`: one self-contained .onnx file, verified in ONNX Runtime.

Float models export as fp32 or fp16; quantized models as QDQ with edgeshrink's own scales and zero
points (onnx_build.py), with uint8 (U8S8) or int8 (S8S8) activations. With `activation_type="auto"`
both are built and timed in ONNX Runtime on this machine, and the faster is written (the choice and
both timings are in the result), with a note when int8 is slower than float here.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.exporters.base import Built, Exporter, Runner, register_exporter
from edgeshrink.exporters.onnx_build import float_twin, output_step, to_onnx
from edgeshrink.exporters.qdq import set_activation_type
from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.prepare import is_quantized, weight_quantizers
from edgeshrink.runtimes.onnxruntime import make_session, run_session, time_interleaved

KERNELS = {"uint8": "U8S8", "int8": "S8S8"}


def precision_of(model: nn.Module) -> str:
    if is_quantized(model):
        bits = sorted({q.bits for _, _, q in weight_quantizers(model)})
        return "int8" if bits == [8] else "w" + "/".join(str(b) for b in bits) + "a8"
    dtypes = {p.dtype for p in model.parameters()}
    return "fp16" if dtypes == {torch.float16} else "fp32"


def _slower_note(best_ms: float, float_ms: float) -> str:
    why = (
        "this CPU has no int8 dot-product instructions (VNNI), so integer convolutions run no faster "
        "than float ones and the quantize/dequantize work is added on top"
        if int8_weights_saturate()
        else "the quantize/dequantize work outweighs the integer kernels"
    )
    return (
        f"int8 is slower than float on this machine for this model ({best_ms:.3f} ms vs "
        f"{float_ms:.3f} ms at batch 1): {why}; ship the float model unless size matters more than speed"
    )


def choose_kernels(model: nn.Module, example: torch.Tensor, threads: int) -> tuple[onnx.ModelProto, str, list, dict]:
    """Build the uint8 and int8 variants, time them (and the float twin) interleaved, keep the faster."""
    uint8_graph, rows = to_onnx(model, example, "uint8")
    int8_graph = onnx.ModelProto()
    int8_graph.CopyFrom(uint8_graph)
    set_activation_type(int8_graph, "int8")  # same grid, zero points shifted: no second export
    candidates = {"uint8": uint8_graph, "int8": int8_graph}
    sessions, refused = {}, {}
    for t, g in candidates.items():
        try:
            sessions[t] = make_session(g.SerializeToString(), threads)
        except RuntimeLoadError as exc:
            refused[KERNELS[t]] = str(exc)
    if not sessions:
        raise ExportError(f"ONNX Runtime loads neither the uint8 nor the int8 variant: {refused['U8S8']}")
    sessions["float"] = make_session(float_twin(model, example).SerializeToString(), threads)
    timings = time_interleaved(sessions, example[:1].numpy(), runs=30, warmup=5, threads=threads)
    float_ms = timings.pop("float").median_ms
    chosen = min(timings, key=lambda t: timings[t].median_ms)
    choice = {
        "chosen": KERNELS[chosen],
        "measured_batch1_ms": {KERNELS[t]: v.median_ms for t, v in timings.items()},
        "float_batch1_ms": float_ms,
        "note": "uint8 and int8 activations are the same grid; the faster kernels on this machine were kept",
    }
    if refused:
        choice["refused"] = refused
        choice["note"] += f"; {', '.join(refused)} could not run here (see refused)"
    if timings[chosen].median_ms > float_ms:
        choice["recommendation"] = _slower_note(timings[chosen].median_ms, float_ms)
    return candidates[chosen], chosen, rows, choice


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    runtime = "ONNX Runtime"
    description = "one self-contained .onnx (fp32, fp16, or QDQ with int8/INT4 weights), verified in ONNX Runtime"
    options = {"activation_type": ("auto", "uint8", "int8")}

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        activation_type, kernel_choice = options["activation_type"], None
        threads = int(options.get("threads") or 2)
        if not is_quantized(model):
            graph, rows = to_onnx(model, example)
            activation_type = None
        elif activation_type == "auto":
            graph, activation_type, rows, kernel_choice = choose_kernels(model, example, threads)
        else:
            graph, rows = to_onnx(model, example, activation_type)
        try:
            onnx.checker.check_model(graph)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported ONNX model is invalid: {str(exc).splitlines()[0]}") from None
        return Built(
            graph.SerializeToString(),
            model,
            precision_of(model),
            activation_type=activation_type,
            layers=rows,
            kernel_choice=kernel_choice,
            step=output_step(model),
            rtol=1e-2 if precision_of(model) == "fp16" else 1e-3,
        )

    def runner(self, data: bytes, threads: int) -> Runner:
        session = make_session(data, threads)
        return lambda x: run_session(session, x)
