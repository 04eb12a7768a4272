"""Rebuild a compressed model from a fresh instance of its architecture and stored tensors.

A container (or checkpoint) holds tensors and, in its metadata, what was done to the architecture:
quantization (which layers, how many bits; the fake-quantized graph is rebuilt by the same
deterministic `prepare`) or float16. This module turns `fresh model + tensors + metadata` back into
the model that was compressed, so evaluation and export work from the file alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from edgeshrink.encode.container import load_into


def restore_model(fresh: nn.Module, state: Mapping[str, torch.Tensor], meta: dict | None, source: str) -> nn.Module:
    """`fresh` (an untrained instance of the architecture) with the stored tensors loaded, and the
    quantization or precision of the metadata applied."""
    meta = meta or {}
    quantization = meta.get("quantization")
    if quantization:
        from torch.nn.utils import parametrize

        from edgeshrink.quant.fakequant import WeightQuant
        from edgeshrink.quant.prepare import prepare, set_mode
        from edgeshrink.weights import bake_in_place, mask_from_zeros

        bits = {str(k): int(v) for k, v in quantization["bits"].items()}
        group_size = int(quantization.get("group_size", 0))
        reduced = bool(quantization.get("reduced_range", False))
        rebuilt, _ = prepare(fresh, bits, group_size=group_size, reduced_range=reduced)
        bake_in_place(rebuilt)  # load plain tensors, then put the weight quantizers back
        load_into(rebuilt, state, source)
        for name, layer_bits in bits.items():
            module = rebuilt.get_submodule(name)
            mask_from_zeros(module, "weight")
            quantizer = WeightQuant(module.weight, layer_bits, group_size if layer_bits < 8 else 0, reduced=reduced)
            parametrize.register_parametrization(module, "weight", quantizer)
        set_mode(rebuilt, "quantize")
        return rebuilt.eval()
    if meta.get("precision") == "float16":
        from edgeshrink.stages.quantize import HalfPrecision

        return load_into(HalfPrecision(fresh), state, source).eval()
    return load_into(fresh, state, source)
