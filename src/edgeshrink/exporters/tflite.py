"""`--format tflite`: a .tflite file for LiteRT, verified in the LiteRT interpreter.

Modes (`quantize`):
- `none`: fp32; `float16`: float16 weights (TFLite's float16 mode; the default for an fp16 model);
- `dynamic`: int8 per-channel weights, activations quantized on the fly; float inputs and outputs;
- `int8`: full integer. A model edgeshrink already quantized keeps its own scales and zero points; a
  float model is first quantized here (edgeshrink's post-training quantization on the calibration
  batches, full-range weights: LiteRT's kernels accumulate in 32 bits). Inputs and outputs are int8:
  a caller quantizes an input as q = clip(round(x / scale) + zero_point, -128, 127) and reads
  y = (q - zero_point) * scale, with the (scale, zero_point) pairs of the result's `io` field;
- `auto`: `int8` for a quantized model, `float16` for a float16 one, `none` otherwise.
Every export is verified on the given inputs against the PyTorch model it came from (for int8, the
fake-quantized model that the file's integers reproduce).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.exporters.base import Built, Exporter, Runner, as_input, register_exporter
from edgeshrink.exporters.onnx_build import output_step
from edgeshrink.exporters.reference import int8_reference
from edgeshrink.exporters.tflite_build import (
    WITHOUT_LAYOUT,
    convert,
    convert_with_fallback,
    dynamic_int8,
    float16_weights,
    litert_int8_copy,
)
from edgeshrink.quant.half import is_half
from edgeshrink.quant.prepare import is_quantized
from edgeshrink.runtimes.litert import io_details, make_interpreter, require_litert, run_interpreter
from edgeshrink.weights import baked_copy

MODES = ("auto", "none", "float16", "dynamic", "int8")
MIN_TOP1_AGREEMENT = {"none": 99.5, "float16": 99.5, "dynamic": 99.0, "int8": 99.0}
RTOL = {"none": 1e-3, "float16": 1e-2, "dynamic": 5e-2, "int8": 1e-3}  # int8 uses output steps instead
PRECISION = {"none": "fp32", "float16": "fp16", "dynamic": "dynamic-int8", "int8": "int8"}


def resolve_mode(model: nn.Module, quantize: str) -> str:
    quantized = is_quantized(model)
    if quantize == "auto":
        return "int8" if quantized else "float16" if is_half(model) else "none"
    if quantized and quantize != "int8":
        raise ExportError(
            f"this model is already quantized by edgeshrink; --quantize {quantize} would throw its scales away: "
            "use --quantize int8 (or auto), or export the model from before the quantize stage"
        )
    if is_half(model) and quantize != "float16":
        raise ExportError(
            f"this model computes in float16; --quantize {quantize} would not reproduce it: use --quantize float16 "
            "(or auto), or export the model from before the half stage"
        )
    return quantize


@dataclass
class TFLiteFile:
    """A built .tflite, the model it reproduces, notes, and how to convert it again without litert-torch's
    channels-last layout pass (None when it already was)."""

    data: bytes
    reference: nn.Module
    notes: list[str]
    without_layout: Callable[[], bytes] | None


def tflite_file(
    model: nn.Module, example: torch.Tensor, mode: str, calibration: list[torch.Tensor] | None
) -> TFLiteFile:
    """The file of one mode: the model prepared for the converter once (calibrated, for int8), converted
    (without the layout pass if that fails), then finished (float16 or dynamic-range weights)."""
    notes: list[str] = []
    example = as_input(example[:1])
    if mode == "int8":
        reference = int8_reference(model, calibration, notes)
        ready, more = litert_int8_copy(reference)
        notes += more
    else:
        reference = model
        ready = baked_copy(model.model if is_half(model) else model).float().eval()
    finish = _finishing(mode, notes)
    data, layout_pass = convert_with_fallback(ready, example, mode == "int8", notes)
    redo = (lambda: finish(convert(ready, example, mode == "int8", layout_pass=False))) if layout_pass else None
    return TFLiteFile(finish(data), reference, notes, redo)


def tflite_bytes(
    model: nn.Module, example: torch.Tensor, mode: str, calibration: list[torch.Tensor] | None
) -> tuple[bytes, nn.Module, list[str]]:
    """(bytes, the model they reproduce, notes) of one mode."""
    built = tflite_file(model, example, mode, calibration)
    return built.data, built.reference, built.notes


def _finishing(mode: str, notes: list[str]) -> Callable[[bytes], bytes]:
    """What turns the converter's file into the mode's (and says so in `notes`)."""
    if mode == "float16":
        notes.append("float16 weights, dequantized to float32 before each op (TFLite's float16 mode)")
        return float16_weights
    if mode == "dynamic":
        notes.append("dynamic range: int8 weights per channel, activations quantized on the fly by the kernels")
        return dynamic_int8
    return lambda data: data


@register_exporter
class TFLiteExporter(Exporter):
    name = "tflite"
    suffix = ".tflite"
    runtime = "LiteRT"
    description = "a .tflite for LiteRT: fp32, float16 weights, dynamic-range int8 or full int8, verified in LiteRT"
    options = {"quantize": MODES}

    def require(self) -> None:
        require_litert(f"--format {self.name}")

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        mode = resolve_mode(model, options["quantize"])
        made = tflite_file(model, example, mode, calibration)
        io = _loaded_io(made)
        return Built(
            made.data,
            made.reference,
            PRECISION[mode],
            activation_type="int8" if mode == "int8" else None,
            io=io,
            notes=made.notes,
            step=output_step(made.reference) if mode == "int8" else None,
            rtol=RTOL[mode],
            min_agreement=MIN_TOP1_AGREEMENT[mode],
            state={"without_layout": made.without_layout},
        )

    def check(self, built: Built, batches: list[torch.Tensor], threads: int) -> dict:
        """The file's parity; when it is outside the tolerance (or refused), the file converted without
        litert-torch's channels-last layout pass is checked too and kept when it is closer to PyTorch: that
        pass has given int8 files 9 output steps off where the graph without it matches to the step."""
        try:
            result, failed = super().check(built, batches, threads), None
        except ExportError as exc:
            result, failed = None, exc
        redo = built.state.pop("without_layout", None)
        if (result is not None and result["within_tolerance"]) or redo is None:
            return _returned(result, failed)
        try:
            other = dataclasses.replace(built, data=redo())
            alternative = super().check(other, batches, threads)
        except ExportError:
            return _returned(result, failed)
        if result is not None and alternative["max_abs_diff"] >= result["max_abs_diff"]:
            return result
        before = f"{result['max_abs_diff']:.4g} off PyTorch" if result else f"refused ({failed})"
        built.data, built.io = other.data, io_details(make_interpreter(other.data, 1))
        built.notes.append(_without_layout_note(f"{before}, without it {alternative['max_abs_diff']:.4g} off"))
        return alternative

    def runner(self, data: bytes, threads: int) -> Runner:
        interpreter = make_interpreter(data, threads)
        return lambda x: run_interpreter(interpreter, x)


def _loaded_io(made: TFLiteFile) -> dict:
    """The file's input and output details, from LiteRT. When LiteRT cannot load the file (litert-torch's
    layout pass has written a BROADCAST_TO or FULLY_CONNECTED whose shapes do not fit), the file converted
    without that pass replaces it, said in the notes; when that one does not load either, the first refusal."""
    try:
        return io_details(make_interpreter(made.data, 1))
    except RuntimeLoadError as exc:
        if made.without_layout is None:
            raise
        failed = exc
    try:
        data = made.without_layout()
        io = io_details(make_interpreter(data, 1))
    except (ExportError, RuntimeLoadError):
        raise failed from None
    made.data, made.without_layout = data, None
    made.notes.append(_without_layout_note(f"not loadable by LiteRT ({str(failed)[:200]})"))
    return io


def _without_layout_note(with_it: str) -> str:
    return (
        f"converted without litert-torch's channels-last layout pass, {WITHOUT_LAYOUT}: with it the file was {with_it}"
    )


def _returned(result: dict | None, failed: ExportError | None) -> dict:
    if result is None:
        raise failed
    return result
