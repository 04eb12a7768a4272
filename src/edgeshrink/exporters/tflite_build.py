"""Build .tflite bytes with litert-torch (and ai-edge-quantizer for the weight-only modes), in memory.

- fp32: the converter's float graph;
- float16: TFLite's float16 post-training mode: float16 weights, dequantized to float32 before the ops
  that use them (ai-edge-quantizer's float casting), float compute;
- dynamic: int8 per-channel weights, activations quantized on the fly (dynamic_wi8_afp32);
- int8: full integer with edgeshrink's own scales: each activation quantizer written as PyTorch's
  decomposed int8 quantize/dequantize pair (the same grid, zero point - 128) and each weight as
  quantize/dequantize_per_channel with its scales; the converter's static Q/DQ mode folds them into
  int8 tensors.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path
from unittest import mock

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.errors import ExportError
from edgeshrink.exporters import litert_lowerings
from edgeshrink.exporters.onnx_build import quantized_weights
from edgeshrink.quant.export_copy import export_copy
from edgeshrink.runtimes.litert import quiet


class _Int8Weight(nn.Module):
    """Parametrization: the weight through int8 quantize/dequantize with the model's own per-channel
    scales (the values are already on that grid, so this is exact); the converter stores the integers."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float().reshape(-1).clone())
        self.register_buffer("zero_point", torch.zeros(self.scale.numel(), dtype=torch.int64))
        # one grid for the tensor (a shared codebook, or a layer with one output channel): one scale in the file,
        # a constant here (read from the buffer in forward, torch.export meets a data-dependent float and fails)
        self.tensor_scale = float(self.scale[0]) if self.scale.numel() == 1 else None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        if self.tensor_scale is not None:
            scale = self.tensor_scale
            q = ops.quantize_per_tensor.default(weight, scale, 0, -127, 127, torch.int8)
            return ops.dequantize_per_tensor.default(q, scale, 0, -127, 127, torch.int8)
        q = ops.quantize_per_channel.default(weight, self.scale, self.zero_point, 0, -127, 127, torch.int8)
        return ops.dequantize_per_channel.default(q, self.scale, self.zero_point, 0, -127, 127, torch.int8)


def litert_int8_copy(model: nn.Module, runtime: str = "LiteRT", file: str = ".tflite") -> tuple[nn.Module, list[str]]:
    """A plain copy of a fake-quantized model whose quantizers are decomposed int8 ops (the form PyTorch's PT2E
    quantization leaves, which LiteRT's converter and ExecuTorch's XNNPACK partitioner read as int8 tensors)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

    notes = []
    weights = quantized_weights(model)
    plain = export_copy(model, "litert")
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
            f"{'/'.join(map(str, sub_byte))}-bit weights are stored as int8 in the {file} file (same integers, "
            f"one byte each): {runtime}'s int8 kernels run them"
        )
    return plain, notes


def convert_with_fallback(
    model: nn.Module, example: torch.Tensor, static_int8: bool, notes: list[str]
) -> tuple[bytes, bool]:
    """`convert`, and when litert-torch's channels-last layout pass fails on the graph, `convert` without it
    (said in `notes`). Returns (bytes, whether the layout pass ran)."""
    try:
        return convert(model, example, static_int8), True
    except ExportError as exc:
        if "Lowering not found" in str(exc):  # an operator LiteRT lacks: no layout changes that
            raise
        failed = exc
    try:
        data = convert(model, example, static_int8, layout_pass=False)
    except ExportError as exc:
        raise (exc if "Lowering not found" in str(exc) else failed) from None  # the operator LiteRT lacks first
    notes.append(
        f"litert-torch's channels-last layout pass failed on this graph ({str(failed)[:200]}); the file was "
        f"converted without it, {WITHOUT_LAYOUT}"
    )
    return data, False


WITHOUT_LAYOUT = "with transposes around each convolution: measure its latency"


def convert(model: nn.Module, example: torch.Tensor, static_int8: bool, layout_pass: bool = True) -> bytes:
    """litert-torch conversion at batch 1; `static_int8` tells the converter to fold Q/DQ pairs into int8
    tensors; `layout_pass=False` leaves out its channels-last layout pass (a transpose before and after each
    convolution instead)."""
    with quiet():
        import litert_torch  # its torchao import prints "Failed to load ..." lines
        from litert_torch._convert import fx_passes

    litert_lowerings.decompose_adaptive_max_pool()
    litert_lowerings.topk_as_tflite_topk()
    quant_config = None
    if static_int8:
        litert_lowerings.elementwise_layout_rewriters()
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize import quant_config as qc

        # The config only selects the converter's static Q/DQ mode; the scales are already in the graph.
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True)
        )
        quant_config = qc.QuantConfig(pt2e_quantizer=quantizer)
    layout = (
        contextlib.nullcontext()
        if layout_pass
        else mock.patch.object(fx_passes, "OptimizeLayoutTransposesPass", _no_layout_pass)
    )
    with tempfile.TemporaryDirectory() as tmp, layout:
        path = Path(tmp) / "model.tflite"
        try:
            with quiet():
                litert_torch.convert(model.eval(), (example[:1],), quant_config=quant_config).export(str(path))
        except Exception as exc:
            raise ExportError(_conversion_failure(exc)) from None
        return path.read_bytes()


def _conversion_failure(exc: Exception) -> str:
    """The converter's error in one line; for an operator LiteRT has no conversion for, which one and what to do."""
    text = " ".join(str(exc).split())
    missing = re.search(r"Lowering not found: (\S+)", text)
    if missing:
        op = missing.group(1).removesuffix(".default")
        return (
            f"LiteRT has no conversion for {op} (litert-torch: 'Lowering not found'); write that step of the model's "
            "forward with operators LiteRT has (an adaptive max pool to a size that does not divide the input is a "
            "max_pool2d with an explicit kernel), or export to ONNX"
        )
    text = re.split(r" (?:While executing|Original traceback:|Use tlparse)", text)[0]
    return f"litert-torch could not convert the model: {type(exc).__name__}: {text[:400]}"


def _no_layout_pass():
    """Stands in for litert-torch's OptimizeLayoutTransposesPass(): leaves the program as it is (NCHW)."""
    from litert_torch import fx_infra

    class NoLayoutPass(fx_infra.ExportedProgramPassBase):
        def call(self, exported_program):
            return fx_infra.ExportedProgramPassResult(exported_program, False)

    return NoLayoutPass()


def _quantize_weights(float_tflite: bytes, recipe) -> bytes:
    from ai_edge_quantizer import quantizer

    with quiet():
        q = quantizer.Quantizer(bytearray(float_tflite))
        q.load_quantization_recipe(recipe)
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def dynamic_int8(float_tflite: bytes) -> bytes:
    """ai-edge-quantizer's dynamic-range recipe: int8 per-channel weights, float activations."""
    from ai_edge_quantizer import recipe

    return _quantize_weights(float_tflite, recipe.dynamic_wi8_afp32())


def float16_weights(float_tflite: bytes) -> bytes:
    """TFLite's float16 mode: weights of conv / fully connected / embedding ops stored as float16 and
    dequantized before the op (ai-edge-quantizer's float casting, weight only)."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.recipe import AlgorithmName

    manager = recipe_manager.RecipeManager()
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=True,
    )
    manager.add_quantization_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=config,
        algorithm_key=AlgorithmName.FLOAT_CASTING,
    )
    return _quantize_weights(float_tflite, manager.get_quantization_recipe())
