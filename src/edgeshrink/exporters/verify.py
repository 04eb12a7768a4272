"""Parity of an exported file with the PyTorch model it came from, on real inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn


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
