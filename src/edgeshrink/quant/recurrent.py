"""Integer weights for recurrent layers (GRU, LSTM, RNN) whose compute stays float.

ONNX Runtime's and LiteRT's QDQ paths have no integer GRU/LSTM kernel, so these layers run in float. Their
weights are still most of a speech or sequence model's bytes: stored as float32, an int8 recipe on an LSTM
embedding model wrote a container 0.99x the fp32 one. Each weight matrix (`weight_ih_l0`, `weight_hh_l0`,
...) gets a `WeightQuant` parametrization, 8 bits per row (one scale per gate unit, the rows the gates are
computed from), so the model computes with exactly the weights the container stores as int8 codes; biases
stay float (a few hundred values). The layer is listed as float compute with int8 storage, and the bits are
recorded per tensor in the artifact (`Quantization.recurrent`) so `load` rebuilds the same model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.errors import FormatError
from edgeshrink.quant.fakequant import WeightQuant

RECURRENT = (nn.GRU, nn.LSTM, nn.RNN)
RECURRENT_BITS = 8  # per row; sub-byte recipes (w4a8) keep 8 here: no kernel would read packed 4-bit rows


def recurrent_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(tensor key 'module.weight_ih_l0', module, parameter name) of every recurrent weight matrix."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, RECURRENT):
            for param in module._flat_weights_names:  # type: ignore[attr-defined]
                if param.startswith("weight_"):
                    out.append((f"{name}.{param}" if name else param, module, param))
    return out


def attach_recurrent_quantizers(model: nn.Module, bits: int = RECURRENT_BITS) -> dict[str, int]:
    """A per-row WeightQuant on every recurrent weight matrix of `model` (in place); returns {key: bits}."""
    recorded = {}
    for key, module, param in recurrent_weights(model):
        parametrize.register_parametrization(module, param, WeightQuant(getattr(module, param), bits))
        recorded[key] = bits
    return recorded


def recurrent_quantizers(model: nn.Module) -> list[tuple[str, nn.Module, str, WeightQuant]]:
    """(tensor key, module, parameter name, its WeightQuant) for every quantized recurrent weight."""
    out = []
    for key, module, param in recurrent_weights(model):
        if parametrize.is_parametrized(module, param):
            for p in module.parametrizations[param]:  # type: ignore[union-attr,index]
                if isinstance(p, WeightQuant):
                    out.append((key, module, param, p))
    return out


def reattach_recurrent_quantizers(model: nn.Module, bits: dict[str, int], scales: dict[str, torch.Tensor]) -> None:
    """Put back the quantizers a file recorded, with their stored scales (`io.storage.load_quantized`)."""
    by_key = {key: (module, param) for key, module, param in recurrent_weights(model)}
    for key, width in bits.items():
        if key not in by_key:
            raise FormatError(
                f"the file records {key!r} as a recurrent weight, but the model has no GRU/LSTM/RNN weight by that "
                "name; load it into the architecture it was saved from"
            )
        module, param = by_key[key]
        quantizer = WeightQuant(getattr(module, param), width, scale=scales.get(key))
        parametrize.register_parametrization(module, param, quantizer)


def note_recurrent_rows(rows: list, recurrent: dict[str, int]) -> None:
    """The plan's rows (`quant.prepare.LayerPlan`) of recurrent layers: float compute, weights stored as codes."""
    modules = {key.rsplit(".", 1)[0] if "." in key else "(model)" for key in recurrent}
    for row in rows:
        if row.name in modules:
            row.weight_bits = RECURRENT_BITS
            row.granularity = "per row (gate unit): int8 storage, float compute"
            row.reason = (
                f"no integer {row.type} kernel in ONNX Runtime's or LiteRT's QDQ path: computed in float, "
                f"its weights stored as {RECURRENT_BITS}-bit codes"
            )


def recurrent_note(bits: dict[str, int]) -> str:
    """What the stage says about recurrent layers."""
    modules = sorted({key.rsplit(".", 1)[0] for key in bits})
    return (
        f"recurrent layers run in float (no integer GRU/LSTM kernel in ONNX Runtime's or LiteRT's QDQ path), "
        f"their {len(bits)} weight matrices stored as {RECURRENT_BITS}-bit codes, one scale per row: "
        + ", ".join(modules)
    )
