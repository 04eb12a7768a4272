"""`--format ncnn`: an ncnn network (NAME.param + NAME.bin) written by pnnx, verified in ncnn's own runtime.

pnnx (its bundled converter binary, run as a child process) reads a TorchScript trace of the model at batch 1
and writes the ncnn graph; ncnn's Python runtime then runs it on the verification inputs. Weights are stored as
float16 (`precision fp16`, pnnx's default and half the bytes) or float32 (`fp32`); `auto` is fp16. ncnn keeps
neither sparsity nor weight sharing in the file: pruned and shared weights are written dense. Its int8 path
needs calibration tools (ncnn2table, ncnn2int8) that the Python wheels do not ship, so a model edgeshrink
quantized is refused with what to export instead.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.exporters.base import Built, Exporter, ExportResult, Runner, as_input, register_exporter
from edgeshrink.files import atomic_write
from edgeshrink.quant.half import is_half
from edgeshrink.quant.prepare import is_quantized
from edgeshrink.runtimes.litert import quiet
from edgeshrink.runtimes.ncnn import NcnnSession, require_ncnn
from edgeshrink.weights import baked_copy

PRECISIONS = ("auto", "fp16", "fp32")
RTOL = {"fp16": 1e-2, "fp32": 1e-3}
PNNX_TIMEOUT_S = 600


def _input_arg(example: torch.Tensor) -> str:
    if example.is_floating_point():
        return f"[{','.join(map(str, example.shape))}]f32"
    raise ExportError(
        "ncnn takes float inputs only and this model reads integer ones (token ids): use --format onnx, tflite or pte"
    )


def pnnx_convert(model: nn.Module, example: torch.Tensor, fp16: bool) -> tuple[str, bytes]:
    """(the .param text, the .bin bytes) pnnx writes for `model` traced at `example`'s shape."""
    import pnnx

    arg = _input_arg(example)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            with quiet(), torch.no_grad():
                torch.jit.trace(model.eval(), (example,), check_trace=False).save(str(folder / "m.pt"))
        except Exception as exc:  # tracing raises many types; the reason is in the text
            raise ExportError(f"ncnn export could not trace the model: {' '.join(str(exc).split())[:300]}") from None
        outputs = {k: str(folder / f"m.{k}") for k in ("ncnnparam", "ncnnbin", "ncnnpy", "pnnxparam", "pnnxbin")}
        outputs.update(pnnxpy=str(folder / "m_pnnx.py"), pnnxonnx=str(folder / "m.pnnx.onnx"))
        command = [pnnx.EXEC_PATH, str(folder / "m.pt"), f"inputshape={arg}", *(f"{k}={v}" for k, v in outputs.items())]
        command.append(f"fp16={int(fp16)}")
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, timeout=PNNX_TIMEOUT_S)
        param, weights = Path(outputs["ncnnparam"]), Path(outputs["ncnnbin"])
        if done.returncode != 0 or not param.is_file() or not weights.is_file():
            tail = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()][-1:] or ["no output"]
            raise ExportError(f"pnnx could not convert the model to ncnn (exit {done.returncode}): {tail[0][:300]}")
        return param.read_text(), weights.read_bytes()


def resolve_precision(model: nn.Module, precision: str) -> str:
    if is_quantized(model):
        raise ExportError(
            "ncnn export writes float16 or float32 weights, and ncnn's int8 path needs its calibration tools "
            "(ncnn2table, ncnn2int8), which the Python wheels lack: export the model from before the quantize "
            "stage to ncnn, or this one with --format tflite, pte or onnx"
        )
    return "fp16" if precision == "auto" else precision


@register_exporter
class NcnnExporter(Exporter):
    name = "ncnn"
    suffix = ".param"
    runtime = "ncnn"
    description = "an ncnn network (NAME.param + NAME.bin, fp16 or fp32 weights) written by pnnx, verified in ncnn"
    options = {"precision": PRECISIONS}

    def require(self) -> None:
        require_ncnn(f"--format {self.name}")

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        precision = resolve_precision(model, options["precision"])
        plain = baked_copy(model.model if is_half(model) else model).float().eval()
        param, weights = pnnx_convert(plain, as_input(example[:1]), fp16=precision == "fp16")
        notes = ["pruned and shared weights are stored dense: ncnn's file format has no sparse or indexed weights"]
        if precision == "fp16":
            notes.insert(0, "float16 weights, verified with float32 compute (ncnn uses float16 where a CPU has it)")
        return Built(
            weights,
            model,
            precision,
            notes=notes,
            rtol=RTOL[precision],
            min_agreement=99.5,
            extra={"param_bytes": len(param.encode()), "bin_bytes": len(weights)},
            state={"param": param},
        )

    def runner(self, data: bytes, threads: int) -> Runner:
        raise RuntimeLoadError("an ncnn network is two files: load it with session_runner (the .param and the .bin)")

    def session_runner(self, built: Built, threads: int) -> Runner:
        return NcnnSession(built.state["param"], built.data, threads).run

    def write(self, built: Built, path: Path, result: ExportResult, options: dict[str, Any]) -> list[Path]:
        param_text = built.state["param"]
        param = atomic_write(path, param_text.encode())
        weights = atomic_write(path.with_suffix(".bin"), built.data)
        result.bytes = len(param_text.encode()) + len(built.data)
        return [param, weights]
