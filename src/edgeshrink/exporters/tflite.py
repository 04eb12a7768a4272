"""Export a (compressed) PyTorch model to a .tflite file (LiteRT, TFLite Micro) and prove it computes the
same, in the LiteRT interpreter.

Modes (`quantize`):
- `none`: fp32, converted by litert-torch;
- `dynamic`: int8 weights per channel, float activations quantized on the fly by the kernels
  (ai-edge-quantizer's dynamic_wi8_afp32 recipe on the fp32 file); float inputs and outputs;
- `int8`: full integer. A model edgeshrink already quantized keeps its own scales and zero points: its
  fake quantizers are written as PyTorch's decomposed quantize/dequantize ops, which the converter turns
  into int8 tensors (activations: the same uint8 grid with the zero point shifted by 128; weights: the
  same integers, per channel). A float model is first quantized here (edgeshrink's post-training
  quantization, calibrated on the given batches). Inputs and outputs are int8: a caller quantizes an
  input as q = clip(round(x / scale) + zero_point, -128, 127) and reads y = (q - zero_point) * scale,
  with the (scale, zero_point) pairs that the result's `io` field and the C header give;
- `auto`: `int8` for a model edgeshrink quantized, `none` otherwise.

Every export is verified by default on the given inputs against the PyTorch model it came from (for
int8, the fake-quantized model that the file's integers reproduce).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.encode.container import atomic_write
from edgeshrink.errors import ExportError
from edgeshrink.exporters.litert_runtime import make_interpreter, quiet, require_litert, run_interpreter
from edgeshrink.exporters.onnx import ExportResult, _output_step, _quantized_weights
from edgeshrink.exporters.verify import export_inputs, parity, require_agreement
from edgeshrink.quant.prepare import activation_quantizers, is_quantized
from edgeshrink.weights import baked_copy

MODES = ("auto", "none", "dynamic", "int8")
MIN_TOP1_AGREEMENT = {"none": 99.5, "dynamic": 99.0, "int8": 99.0}


class _Int8Weight(nn.Module):
    """Parametrization: the weight through int8 quantize/dequantize with the model's own per-channel
    scales (the values are already on that grid, so this is exact); the converter stores the integers."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float().reshape(-1).clone())
        self.register_buffer("zero_point", torch.zeros(self.scale.numel(), dtype=torch.int64))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        q = ops.quantize_per_channel.default(weight, self.scale, self.zero_point, 0, -127, 127, torch.int8)
        return ops.dequantize_per_channel.default(q, self.scale, self.zero_point, 0, -127, 127, torch.int8)


def _litert_int8_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A plain copy of a fake-quantized model whose quantizers are decomposed int8 ops."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

    notes = []
    weights = _quantized_weights(model)
    plain = baked_copy(model).eval()
    modules = dict(plain.named_modules())
    for w in weights:
        if w.group_size:
            raise ExportError(
                f"{w.layer}: blocked {w.bits}-bit weights (one scale per {w.group_size} input channels) have no "
                "TFLite equivalent; quantize with group_size = 0 (per channel) for TFLite, or export to ONNX"
            )
        parametrize.register_parametrization(modules[w.layer], "weight", _Int8Weight(torch.from_numpy(w.scale)))
    sub_byte = sorted({w.bits for w in weights if w.bits < 8})
    if sub_byte:
        notes.append(
            f"{'/'.join(map(str, sub_byte))}-bit weights are stored as int8 in the .tflite file (same integers, "
            "one byte each): LiteRT's built-in int8 kernels run them"
        )
    for _, quantizer in activation_quantizers(plain):
        if quantizer.mode == "quantize":
            quantizer.constants = (float(quantizer.scale), int(quantizer.zero_point))
            quantizer.export_signed = True
    return plain, notes


def _convert(model: nn.Module, example: torch.Tensor, static_int8: bool) -> bytes:
    """litert-torch conversion at batch 1; `static_int8` tells the converter to fold Q/DQ pairs into
    int8 tensors."""
    with quiet():
        import litert_torch  # its torchao import prints "Failed to load ..." lines

    quant_config = None
    if static_int8:
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize import quant_config as qc

        # The config only selects the converter's static Q/DQ mode; the scales are already in the graph.
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
        )
        quant_config = qc.QuantConfig(pt2e_quantizer=quantizer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        try:
            with quiet():
                litert_torch.convert(model.eval(), (example[:1],), quant_config=quant_config).export(str(path))
        except Exception as exc:
            first = " ".join(str(exc).split())[-600:]
            raise ExportError(f"litert-torch could not convert the model: {type(exc).__name__}: {first}") from None
        return path.read_bytes()


def _dynamic_int8(float_tflite: bytes) -> bytes:
    """ai-edge-quantizer's dynamic-range recipe: int8 per-channel weights, float activations."""
    from ai_edge_quantizer import quantizer, recipe

    with quiet():
        q = quantizer.Quantizer(bytearray(float_tflite))
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def _resolve_mode(model: nn.Module, quantize: str) -> str:
    if quantize not in MODES:
        raise ExportError(f"--quantize must be one of {', '.join(MODES)}, got {quantize!r}")
    quantized = is_quantized(model)
    if quantize == "auto":
        return "int8" if quantized else "none"
    if quantized and quantize != "int8":
        raise ExportError(
            f"this model is already quantized by edgeshrink; --quantize {quantize} would throw its scales away: "
            "use --quantize int8 (or auto), or export the model from before the quantize stage"
        )
    return quantize


def to_tflite(
    model: nn.Module,
    example_input: torch.Tensor,
    quantize: str = "auto",
    calibration: Iterable[torch.Tensor] | None = None,
) -> tuple[bytes, nn.Module, str, list[str]]:
    """Build the .tflite bytes (not written, not verified). Returns them with the PyTorch model they
    must reproduce (the fake-quantized one for int8), the mode used, and notes."""
    require_litert()
    model = model.eval()
    if any(p.dtype == torch.float16 for p in model.parameters()):
        raise ExportError(
            "float16 models are not exported to TFLite here: export the float32 model (before the half stage) "
            "with --quantize none, or export this one to ONNX"
        )
    mode = _resolve_mode(model, quantize)
    example = example_input[:1].float()
    notes: list[str] = []
    if mode == "int8":
        reference = model
        if not is_quantized(model):
            if calibration is None:
                raise ExportError("--quantize int8 of a float model needs calibration data (the task's data)")
            from edgeshrink.stages.quantize import QuantizeConfig, post_training_quantize

            batches = [(x, None) for x in calibration]
            reference, plan = post_training_quantize(model, batches, QuantizeConfig(weight_range="full"))
            kept = [layer.name for layer in plan.layers if layer.status == "float"]
            notes.append(
                f"quantized here: int8 post-training quantization, percentile calibration on "
                f"{sum(x.shape[0] for x, _ in batches)} examples, bias correction"
                + (f"; kept in float: {', '.join(kept)}" if kept else "")
            )
        ready, more = _litert_int8_copy(reference)
        notes += more
        return _convert(ready, example, static_int8=True), reference, mode, notes
    float_bytes = _convert(baked_copy(model).eval(), example, static_int8=False)
    if mode == "dynamic":
        notes.append("dynamic range: int8 weights per channel, activations quantized on the fly by the kernels")
        return _dynamic_int8(float_bytes), model, mode, notes
    return float_bytes, model, mode, notes


def io_details(interpreter) -> dict:
    """Input and output of a loaded .tflite file: shape, type, and (scale, zero point) when integer."""
    from edgeshrink.exporters.litert_runtime import io_quantization

    def describe(d: dict) -> dict:
        q = io_quantization(d)
        out = {"shape": [int(v) for v in d["shape"]], "dtype": str(d["dtype"].__name__)}
        if q is not None:
            out["scale"], out["zero_point"] = q
        return out

    return {
        "input": describe(interpreter.get_input_details()[0]),
        "output": describe(interpreter.get_output_details()[0]),
    }


def export_tflite(
    model: nn.Module | object,
    path: str | Path,
    example_input: torch.Tensor | None = None,
    *,
    quantize: str = "auto",
    verify_data: Iterable[torch.Tensor] | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    verify: bool = True,
    threads: int = 2,
) -> ExportResult:
    """Export `model` (an nn.Module or a compress() result) to `path` as .tflite and verify it in LiteRT on
    `verify_data` (batches of inputs; default: the example input). `calibration` (batches of inputs)
    is needed for `quantize="int8"` of a float model. Raises ExportError when the top-1 agreement with
    the PyTorch model is below 99.5% (fp32) or 99% (int8, dynamic); nothing is written then."""
    model, example_input, batches = export_inputs(model, example_input, verify_data)
    data, reference, mode, notes = to_tflite(model, example_input, quantize, calibration)
    precision = {"none": "fp32", "dynamic": "dynamic-int8", "int8": "int8"}[mode]
    result = ExportResult(Path(path), len(data), precision, "int8" if mode == "int8" else None)
    interpreter = make_interpreter(data, threads)
    result.io = io_details(interpreter)
    result.notes = notes
    if verify:
        inputs = batches or [example_input]
        step = _output_step(reference) if mode == "int8" else None
        result.parity = parity(reference, lambda x: run_interpreter(interpreter, x), [x.float() for x in inputs], step)
        result.parity["reference"] = "the fake-quantized PyTorch model" if mode == "int8" else "the PyTorch model"
        require_agreement(result.parity, MIN_TOP1_AGREEMENT[mode], "LiteRT")
    atomic_write(Path(path), data)
    return result
