"""Parity of an exported file with the PyTorch model it came from, on real inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edgeshrink.errors import ExportError

FLOAT_RTOL = 1e-3  # fp32 files: max |diff| <= FLOAT_RTOL x (1 + max |reference|)
QUANTIZED_STEPS = 3  # integer files: max |diff| <= this many output quantization steps


def require_agreement(result: dict, floor: float, runtime: str) -> None:
    """ExportError (nothing gets written) when the exported file does not compute what the model does.

    It passes when its outputs are within the tolerance of the model's, or, for a classifier, when its
    top-1 predictions agree on at least `floor` percent of the examples (a trained model's decisions
    survive a few output steps; an untrained one's near-tied logits do not, though its file is right)."""
    top1, diff, tolerance = result["top1_agreement"], result["max_abs_diff"], result["tolerance"]
    if diff <= tolerance or (top1 is not None and top1 >= floor):
        return
    agreement = f"top-1 agreement {top1:.2f}% (< {floor}%), " if top1 is not None else ""
    raise ExportError(
        f"verification failed: {runtime} differs from PyTorch: {agreement}max |diff| {diff:.4g} "
        f"(tolerance {tolerance:.4g}); the file was not written"
    )


def require_steps(result: dict, max_steps: float, runtime: str) -> None:
    """ExportError when an integer file's outputs stray more than `max_steps` output steps from the model's
    (besides the top-1 floor: TFLite Micro files must match the int8 model to the step)."""
    steps = result.get("max_diff_steps")
    if steps is not None and steps > max_steps * (1 + 1e-3):
        raise ExportError(
            f"verification failed: {runtime} differs from PyTorch by {steps:.2f} output steps (limit {max_steps:g}); "
            "the file was not written"
        )


def parity(
    model: nn.Module,
    run_exported: Callable[[np.ndarray], np.ndarray],
    batches: Iterable[torch.Tensor],
    step: float | None = None,
    rtol: float = FLOAT_RTOL,
) -> dict:
    """Max absolute difference of the outputs and top-1 agreement (for (batch, classes) outputs) over all
    `batches`; with `step` (the output quantization step), the difference is also given in steps."""
    model.eval()
    max_diff, largest, agree, total, classified = 0.0, 0.0, 0, 0, True
    with torch.no_grad():
        for x in batches:
            reference = model(x).float().numpy()
            got = np.asarray(run_exported(x.numpy()), dtype=np.float32).reshape(reference.shape)
            max_diff = max(max_diff, float(np.abs(reference - got).max()))
            largest = max(largest, float(np.abs(reference).max()))
            if reference.ndim == 2 and reference.shape[1] > 1:
                agree += int((reference.argmax(1) == got.argmax(1)).sum())
            else:
                classified = False
            total += reference.shape[0]
    out = {
        "examples": total,
        "max_abs_diff": max_diff,
        "top1_agreement": 100.0 * agree / max(total, 1) if classified else None,
        "tolerance": QUANTIZED_STEPS * step if step else rtol * (1 + largest),
    }
    out["within_tolerance"] = out["max_abs_diff"] <= out["tolerance"]
    if step:
        out["max_diff_steps"] = max_diff / step
    return out
