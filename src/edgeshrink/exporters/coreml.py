"""`--format coreml`: a Core ML ML program (.mlpackage) whose weights keep the model's compression: a shared
layer is stored as a palette (its codebook) plus indices, a pruned one as a sparse mask plus its nonzero
values, both when it is both (coremltools' joint compression), others plainly.

Core ML runs only on Apple platforms: on Linux the package is checked structurally instead of run
(exporters/coreml_check.py): every weight decoded from the package as written equals the model's, each
palette holds the layer's values, each mask its nonzeros. The export says plainly that the numerics were
not run. Weights are float32 (`precision fp32`) or float16 (`fp16`, the default for a float16 model).
BatchNorm is folded into the convolution before conversion (what Core ML would run), so the checked weights
of such a layer are the folded ones. A model edgeshrink quantized to int8 is refused: Core ML's linear
quantization recomputes scales from the weights and would not store edgeshrink's integer grid.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeshrink.errors import ExportError
from edgeshrink.exporters.base import Built, Exporter, ExportResult, Runner, as_input, register_exporter
from edgeshrink.exporters.coreml_check import WEIGHT_OPS, check_package, unpack
from edgeshrink.quant.half import is_half
from edgeshrink.quant.prepare import is_quantized
from edgeshrink.runtimes.litert import quiet
from edgeshrink.weights import baked_copy

PRECISIONS = ("auto", "fp32", "fp16")
SPARSE_FROM = 0.25  # fraction of zero weights from which a tensor is stored as mask + values
PALETTE_BITS = (1, 2, 4, 6, 8)  # what coremltools' "unique" palettization picks from
NOT_RUN = "Core ML runs only on Apple platforms: the package was checked structurally here, its numerics were not run"


def _palette_bits(values: np.ndarray) -> int | None:
    distinct = np.unique(values).size
    return next((b for b in PALETTE_BITS if distinct <= 1 << b), None)


def plan_weight(weight: np.ndarray, value_bytes: int) -> str:
    """plain | sparse | palette | palette+sparse: whichever representation coremltools offers is smaller."""
    zeros = float((weight == 0).mean())
    sparse = zeros >= SPARSE_FROM
    values = weight[weight != 0] if sparse else weight
    bits = _palette_bits(values) if values.size else None
    plain_values = values.size * value_bytes
    if bits is not None and values.size * bits / 8 + (1 << bits) * value_bytes < 0.8 * plain_values:
        return "palette+sparse" if sparse else "palette"
    return "sparse" if sparse else "plain"


WEIGHT_MODULES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d
)  # fmt: skip


def weight_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight the converted program reads with a conv / linear op: each convolution's and Linear's, and
    a MultiheadAttention's packed input projection (one linear op over the (3E, E) matrix)."""
    found = {}
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_MODULES):
            found[name] = m.weight
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            found[f"{name}.in_proj"] = m.in_proj_weight
    return found


def _folded(model: nn.Module) -> nn.Module:
    """The model with each BatchNorm folded into its convolution (torch.fx), or as it is when it does not trace."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model)
    except Exception:  # not symbolically traceable: coremltools' own fusion will show in the check
        return model


def _convert(model: nn.Module, example: torch.Tensor, precision: str):
    with quiet():  # coremltools reports each Apple-only library it cannot load
        import coremltools as ct

    try:
        with quiet(), torch.no_grad():
            program = torch.export.export(model, (example,)).run_decompositions({})
            compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
            return ct.convert(
                program, minimum_deployment_target=ct.target.iOS18, compute_precision=compute, convert_to="mlprogram"
            )
    except Exception as exc:  # torch.export and the converter raise many types; the reason is in the text
        raise ExportError(f"coremltools could not convert the model: {' '.join(str(exc).split())[-300:]}") from None


def _consumers(mlmodel, weights: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """layer -> the names of the MIL conv / linear ops whose weight equals that layer's (a layer applied twice,
    its weight tied, is two ops over one constant: coremltools wants the same compression config on both)."""
    found: dict[str, list[str]] = {}
    ops = [op for op in mlmodel._mil_program.functions["main"].operations if op.op_type in WEIGHT_OPS]
    for layer, weight in weights.items():
        found[layer] = [
            op.name
            for op in ops
            if (value := op.inputs["weight"].val) is not None
            and value.shape == weight.shape
            and np.array_equal(value, weight)
        ]
        if not found[layer]:
            raise ExportError(f"Core ML export: no op of the converted program holds {layer}'s weight; nothing written")
    return found


def _nonzero_palette(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A palette of a pruned layer's nonzero values only (coremltools' "unique" mode counts the zeros too, which
    costs an index bit when the codebook fills a power of two); zeros get any index: the mask drops them."""
    flat = weight.ravel()
    values = np.unique(flat[flat != 0])
    values = values if values.size else np.zeros(1, weight.dtype)
    bits = next(b for b in PALETTE_BITS if values.size <= 1 << b)
    lut = np.zeros(1 << bits, weight.dtype)
    lut[: values.size] = values
    return lut, np.searchsorted(values, flat).clip(0, values.size - 1).astype(np.uint8)


def _compress(mlmodel, plan: dict[str, str]):
    with quiet():  # coremltools reports each Apple-only library it cannot load
        from coremltools.optimize.coreml import (
            OpPalettizerConfig,
            OpThresholdPrunerConfig,
            OptimizationConfig,
            palettize_weights,
            prune_weights,
        )

        exact_zeros = OpThresholdPrunerConfig(threshold=1e-30, minimum_sparsity_percentile=0.0, weight_threshold=0)
        sparse = {op: exact_zeros for op, how in plan.items() if "sparse" in how}
        unique = OpPalettizerConfig(mode="unique", weight_threshold=0)  # the palette is the layer's own values
        nonzero = OpPalettizerConfig(mode="custom", lut_function=_nonzero_palette, weight_threshold=0)
        palette = {op: nonzero if "sparse" in how else unique for op, how in plan.items() if "palette" in how}
        try:
            if sparse:
                mlmodel = prune_weights(mlmodel, OptimizationConfig(op_name_configs=sparse))
            if palette:
                config = OptimizationConfig(op_name_configs=palette)
                mlmodel = palettize_weights(mlmodel, config, joint_compression=True)
        except (ValueError, RuntimeError) as exc:  # coremltools' own checks: a reason, not a traceback
            reason = " ".join(str(exc).split())[:200]
            raise ExportError(f"coremltools could not compress the weights: {reason}; nothing written") from None
    return mlmodel


def _zipped(mlmodel) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "model.mlpackage"
        with quiet():
            mlmodel.save(str(package))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for file in sorted(package.rglob("*")):
                archive.write(file, file.relative_to(tmp))
        return buffer.getvalue()


def resolve_precision(model: nn.Module, precision: str) -> str:
    if is_quantized(model):
        raise ExportError(
            "Core ML export of an int8 model would not keep edgeshrink's integer grid (Core ML's linear quantization "
            "recomputes the scales): export the model from before the quantize stage to coreml (shared and pruned "
            "weights stay compressed), or this one with --format tflite, pte or onnx"
        )
    return ("fp16" if is_half(model) else "fp32") if precision == "auto" else precision


@register_exporter
class CoreMLExporter(Exporter):
    name = "coreml"
    suffix = ".mlpackage"
    runtime = "Core ML (structure checked on Linux; not run)"
    description = "a Core ML .mlpackage with palettized and sparse weights, checked structurally (runs on Apple only)"
    options = {"precision": PRECISIONS}

    def require(self) -> None:
        import importlib.util

        if importlib.util.find_spec("coremltools") is None:
            raise ExportError(
                "--format coreml needs coremltools: pip install 'edgeshrink[coreml]' torch==2.13.0 "
                "(the [executorch] extra brings it too)"
            )

    def build(
        self, model: nn.Module, example: torch.Tensor, options: dict[str, Any], calibration: list[torch.Tensor] | None
    ) -> Built:
        precision = resolve_precision(model, options["precision"])
        plain = _folded(baked_copy(model.model if is_half(model) else model).float().eval())
        dtype = np.float16 if precision == "fp16" else np.float32
        weights = {name: w.detach().numpy().astype(dtype) for name, w in weight_tensors(plain).items()}
        mlmodel = _convert(plain, as_input(example[:1]), precision)
        consumers = _consumers(mlmodel, weights)
        plan = {layer: plan_weight(w, dtype().itemsize) for layer, w in weights.items()}
        ops = {op: how for layer, how in plan.items() if how != "plain" for op in consumers[layer]}
        mlmodel = _compress(mlmodel, ops)
        data = _zipped(mlmodel)
        expected = {layer: (consumers[layer], plan[layer], w) for layer, w in weights.items()}
        return Built(
            data,
            model,
            precision,
            layers=[{"layer": layer, "stored_as": how} for layer, how in plan.items()],
            notes=[NOT_RUN],
            state={"expected_weights": expected},
        )

    def runner(self, data: bytes, threads: int) -> Runner:
        raise ExportError(NOT_RUN)

    def check(self, built: Built, batches: list[torch.Tensor], threads: int) -> dict:
        structure = check_package(built.data, built.state["expected_weights"])
        return {"examples": 0, "structural": structure, "reference": "the model's weights (structure only)"}

    def write(self, built: Built, path: Path, result: ExportResult, options: dict[str, Any]) -> list[Path]:
        target = path if path.suffix == ".mlpackage" else path.with_suffix(".mlpackage")
        target.parent.mkdir(parents=True, exist_ok=True)  # as every other format's atomic_write does
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            staged = unpack(built.data, Path(tmp))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)  # the whole package appears at once, only after the check passed
        result.path = target
        result.bytes = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        return [target]
