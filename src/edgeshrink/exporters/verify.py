"""Parity of an exported file with the PyTorch model it came from, on real inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edgeshrink.errors import ExportError


def export_inputs(
    model: nn.Module | object, example_input: torch.Tensor | None, verify_data: Iterable[torch.Tensor] | None
) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
    """What every exporter starts from: the module (from an nn.Module or a compress() result, in eval
    mode), a float example batch (given, or the first verification example) and the verification batches."""
    if not isinstance(model, nn.Module):  # a CompressResult
        model = getattr(model, "model", model)
    if not isinstance(model, nn.Module):
        raise ExportError(f"export needs an nn.Module or a compress() result, got {type(model).__name__}")
    batches = list(verify_data) if verify_data is not None else []
    if example_input is None:
        if not batches:
            raise ExportError("export needs example_input= (one input batch) or verify_data=")
        example_input = batches[0][:1]
    return model.eval(), example_input.float(), batches


def require_agreement(result: dict, floor: float, runtime: str) -> None:
    """ExportError (nothing gets written) when the exported file's top-1 agreement is below `floor`."""
    top1 = result["top1_agreement"]
    if top1 is not None and top1 < floor:
        raise ExportError(
            f"verification failed: {runtime} agrees with PyTorch on {top1:.2f}% of top-1 predictions "
            f"(< {floor}%), max |diff| {result['max_abs_diff']:.4g}; the file was not written"
        )


def parity(
    model: nn.Module,
    run_exported: Callable[[np.ndarray], np.ndarray],
    batches: Iterable[torch.Tensor],
    step: float | None = None,
) -> dict:
    """Max absolute difference of the outputs and top-1 agreement over all `batches`; with `step` (the
    output quantization step), the difference is also given in steps."""
    model.eval()
    max_diff, agree, total, classified = 0.0, 0, 0, True
    with torch.no_grad():
        for x in batches:
            reference = model(x).float().numpy()
            got = np.asarray(run_exported(x.numpy()), dtype=np.float32)
            max_diff = max(max_diff, float(np.abs(reference - got).max()))
            if reference.ndim == 2:
                agree += int((reference.argmax(1) == got.argmax(1)).sum())
            else:
                classified = False
            total += reference.shape[0]
    top1 = 100.0 * agree / max(total, 1) if classified else None  # only for (batch, classes) outputs
    out = {"examples": total, "max_abs_diff": max_diff, "top1_agreement": top1}
    if step:
        out["max_diff_steps"] = max_diff / step
    return out
