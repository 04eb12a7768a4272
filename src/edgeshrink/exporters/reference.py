"""The int8 PyTorch model a full-integer export reproduces (LiteRT, TFLite Micro, ExecuTorch)."""

from __future__ import annotations

import torch
from torch import nn

from edgeshrink.errors import ExportError
from edgeshrink.quant.prepare import is_quantized


def int8_reference(model: nn.Module, calibration: list[torch.Tensor] | None, notes: list[str]) -> nn.Module:
    """The int8 fake-quantized model a full-integer file reproduces: the model itself when edgeshrink already
    quantized it, otherwise edgeshrink's post-training quantization of it on `calibration` (noted)."""
    if is_quantized(model):
        return model
    if not calibration:
        raise ExportError("--quantize int8 of a float model needs calibration data (the task's training inputs)")
    from edgeshrink.quant.ptq import PTQSettings, post_training_quantize

    batches = [(x, None) for x in calibration]
    reference, plan = post_training_quantize(model, batches, 8, PTQSettings(calibration="percentile"))
    kept = [layer.name for layer in plan.layers if layer.status == "float"]
    notes.append(
        f"quantized here: int8 post-training quantization, percentile calibration on "
        f"{sum(x.shape[0] for x in calibration)} examples, bias correction"
        + (f"; kept in float: {', '.join(kept)}" if kept else "")
    )
    return reference
