"""`--format onnx`: one self-contained .onnx file, verified in ONNX Runtime.

Float models export as fp32 or fp16; quantized models as QDQ with edgeshrink's own scales and zero
points (onnx_build.py), with uint8 (U8S8) or int8 (S8S8) activations. With `activation_type="auto"`
both are built and timed in ONNX Runtime on this machine at batch 1 and 64 (three rounds, new sessions
each), and the faster is written
(the choice and the timings are in the result), with a note when int8 is slower than float here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.exporters.base import Built, Exporter, Runner, register_exporter
from edgeshrink.exporters.onnx_build import FLOAT_OPSET, float_twin, output_step, to_onnx
from edgeshrink.exporters.qdq import set_activation_type
from edgeshrink.exporters.qdq_strip import float_twin_from_qdq
from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.prepare import is_quantized, weight_quantizers
from edgeshrink.quant.recurrent import recurrent_quantizers
from edgeshrink.runtimes.onnxruntime import make_session, run_session, time_in_new_sessions

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


TIMED_BATCHES = (1, 64)  # the batch sizes the kernel choice is measured at: one request, and a batch
ROUNDS = 3  # each with new sessions: one ONNX Runtime session keeps its own speed (2-3% apart) for its life


def _timings(graphs: dict[str, bytes], example: torch.Tensor, threads: int) -> dict[int, dict[str, float]]:
    """Median milliseconds of every graph at each of TIMED_BATCHES over ROUNDS rounds of new sessions. The
    runs scale so that each graph is timed for about 0.3 s in all (a 0.1 ms model is timed 400 times, not
    30: its kernels differ by less than the noise of 30 runs). A batch the graph cannot take is skipped."""
    out = {}
    for batch in TIMED_BATCHES:
        x = example[:1].repeat(batch, *[1] * (example.dim() - 1)).numpy()
        try:
            probe = time_in_new_sessions(graphs, x, runs=5, rounds=1, warmup=2, threads=threads)[0]
        except Exception:  # noqa: BLE001 - a graph with a fixed batch dimension: batch 1 decides
            if batch == 1:
                raise
            continue
        runs = int(min(400, max(20, 300.0 / max(max(probe.values()), 1e-3))) // ROUNDS) + 1
        rounds = time_in_new_sessions(graphs, x, runs=runs, rounds=ROUNDS, threads=threads)
        out[batch] = {k: float(np.median([r[k] for r in rounds])) for k in graphs}
    return out


def choose_kernels(
    model: nn.Module, example: torch.Tensor, threads: int, recurrent_weights: str = "float"
) -> tuple[onnx.ModelProto, str, list, dict]:
    """Build the uint8 and int8 variants, time them (and the float twin) interleaved at batch 1 and 64 with
    new sessions each round, keep the one with the smaller sum of times relative to the faster at each batch."""
    uint8_graph, rows = to_onnx(model, example, "uint8", recurrent_weights)
    int8_graph = onnx.ModelProto()
    int8_graph.CopyFrom(uint8_graph)
    set_activation_type(int8_graph, "int8")  # same grid, zero points shifted: no second export
    candidates = {"uint8": uint8_graph, "int8": int8_graph}
    graphs, refused = {}, {}
    for t, g in candidates.items():
        try:
            graphs[t] = g.SerializeToString()
            make_session(graphs[t], threads)
        except RuntimeLoadError as exc:
            refused[KERNELS[t]] = str(exc)
            del graphs[t]
    if not graphs:
        raise ExportError(f"ONNX Runtime loads neither the uint8 nor the int8 variant: {refused['U8S8']}")
    twin = float_twin_from_qdq(uint8_graph, FLOAT_OPSET) or float_twin(model, example)  # qdq_strip.py
    graphs["float"] = twin.SerializeToString()
    per_batch = _timings(graphs, example, threads)
    float_ms = per_batch[1]["float"]
    kinds = [k for k in graphs if k != "float"]
    score = {k: sum(ms[k] / min(ms[c] for c in kinds) for ms in per_batch.values()) for k in kinds}
    chosen = min(kinds, key=score.get)
    choice = {
        "chosen": KERNELS[chosen],
        "measured_batch1_ms": {KERNELS[t]: per_batch[1][t] for t in kinds},
        "float_batch1_ms": float_ms,
        "measured_ms": {f"batch {b}": {KERNELS.get(k, k): v for k, v in ms.items()} for b, ms in per_batch.items()},
        "note": "uint8 and int8 activations are the same grid; the kernels faster on this machine over batch "
        + " and ".join(str(b) for b in per_batch)
        + " were kept",
    }
    if refused:
        choice["refused"] = refused
        choice["note"] += f"; {', '.join(refused)} could not run here (see refused)"
    if per_batch[1][chosen] > float_ms:
        choice["recommendation"] = _slower_note(per_batch[1][chosen], float_ms)
    return candidates[chosen], chosen, rows, choice


@register_exporter
class OnnxExporter(Exporter):
    name = "onnx"
    suffix = ".onnx"
    runtime = "ONNX Runtime"
    description = "one self-contained .onnx (fp32, fp16, or QDQ with int8/INT4 weights), verified in ONNX Runtime"
    options = {"activation_type": ("auto", "uint8", "int8"), "recurrent_weights": ("float", "int8")}

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        activation_type, kernel_choice = options["activation_type"], None
        recurrent = options["recurrent_weights"]
        if recurrent == "int8" and not recurrent_quantizers(model):
            raise ExportError(
                "recurrent_weights int8 stores a quantized model's GRU/LSTM weights as int8 rows, and this model has "
                'none (no recurrent layer, or quantized with recurrent_weights = "float"); drop the option'
            )
        threads = int(options.get("threads") or 2)
        if not is_quantized(model):
            graph, rows = to_onnx(model, example)
            activation_type = None
        elif activation_type == "auto":
            graph, activation_type, rows, kernel_choice = choose_kernels(model, example, threads, recurrent)
        else:
            graph, rows = to_onnx(model, example, activation_type, recurrent)
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
