"""The tensors a file stores for an artifact, and back.

A float model stores its effective state dict (masks and codebooks applied). A quantized model stores,
for every quantized layer, its weight as integer codes (int8 tensors; sub-byte codes take few distinct
values, so the container packs them to their width) and the scales as `<layer>.weight@scale`, instead
of the float latent weights (recurrent weight matrices likewise, keyed `<module>.weight_ih_l0`, their layers
computed in float); activation quantizers store their scale and zero point only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeshrink.artifact import Artifact, Quantization
from edgeshrink.errors import ArchitectureMismatchError, FormatError
from edgeshrink.quant.fakequant import WeightQuant
from edgeshrink.quant.prepare import set_mode, weight_quantizers
from edgeshrink.quant.recurrent import reattach_recurrent_quantizers, recurrent_quantizers
from edgeshrink.weights import effective_state_dict, mask_from_zeros

SCALE_SUFFIX = "@scale"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate `model` in eval mode, restoring every module's training flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def storage_state(artifact: Artifact) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors to store, {tensor: dtype it stands for}) for an artifact."""
    with eval_mode(artifact.model), torch.no_grad():
        state = effective_state_dict(artifact.model)
        if artifact.quantization is None:
            return state, {}
        represents = {}
        layers = weight_quantizers(artifact.model)
        if {name for name, _, _ in layers} != set(artifact.quantization.bits):
            raise FormatError("internal error: the model's weight quantizers differ from its quantization record")
        for name, _, quantizer in layers:
            key = f"{name}.weight"
            _store_codes(state, represents, key, quantizer, name)
        recorded = {key: q for key, _, _, q in recurrent_quantizers(artifact.model)}
        if set(recorded) != set(artifact.quantization.recurrent):
            raise FormatError("internal error: the model's recurrent quantizers differ from its quantization record")
        for key, quantizer in recorded.items():
            _store_codes(state, represents, key, quantizer, key)
    return state, represents


def _store_codes(
    state: dict[str, torch.Tensor], represents: dict[str, str], key: str, quantizer: WeightQuant, name: str
) -> None:
    """Replace the float tensor `state[key]` by its int8 codes and `key@scale`, checking it is on its grid."""
    weight = state[key]
    scale = quantizer.expanded_scale(weight)
    codes = torch.round(weight / scale)
    if not torch.equal(codes * scale + 0.0, weight):
        raise FormatError(
            f"internal error: {name}'s weights are not on its integer grid (a stage after quantize "
            "changed them); please report it"
        )
    state[key] = codes.to(torch.int8)
    state[key + SCALE_SUFFIX] = quantizer.scale.detach().float().clone()
    represents[key] = "float32"


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load tensors into a plain model, naming every missing, unexpected or misshapen tensor on failure."""
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ArchitectureMismatchError(
            "loading needs a fresh model without masks or codebooks attached: pass a new instance of the architecture"
        )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} {list(state[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ArchitectureMismatchError(
            f"{source} does not fit this model ({'; '.join(problems)}); load it into the architecture it was saved from"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model


def _quantizer(
    weight: torch.Tensor, layer: str, bits: int, quantization: Quantization, scale: torch.Tensor | None
) -> WeightQuant:
    """The weight quantizer a layer had when it was saved (its granularity from the record)."""
    per_tensor = layer in quantization.per_tensor
    group = quantization.group_size if bits < 8 and not per_tensor else 0
    reduced = quantization.reduced_range or layer in quantization.reduced_layers
    return WeightQuant(weight, bits, group, reduced, scale=scale, per_tensor=per_tensor)


def _decode_codes(
    state: dict[str, torch.Tensor], quantization: Quantization, source: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Float weights (codes x scale) in place of each quantized layer's codes; and the scales."""
    plain, scales = dict(state), {}
    tensors = {f"{layer}.weight": (layer, bits) for layer, bits in quantization.bits.items()}
    tensors |= {key: (key, bits) for key, bits in quantization.recurrent.items()}
    for key, (name, bits) in tensors.items():
        scale = plain.pop(key + SCALE_SUFFIX, None)
        if key not in plain:
            raise ArchitectureMismatchError(f"{source} records {name!r} as quantized but stores no weight for it")
        if scale is None:
            continue  # written before integer storage (container version 1): float weights on the grid
        codes = plain[key]
        if codes.is_floating_point():
            raise FormatError(f"{source}: {key} should hold integer codes, not {codes.dtype}; damaged file")
        if name in quantization.recurrent:
            quantizer = WeightQuant(codes.float(), bits, scale=scale)
        else:
            quantizer = _quantizer(codes.float(), name, bits, quantization, scale)
        plain[key] = codes.float() * quantizer.expanded_scale(codes)
        scales[name] = scale
    return plain, scales


def load_quantized(
    skeleton: nn.Module, state: dict[str, torch.Tensor], quantization: Quantization, source: str
) -> nn.Module:
    """A prepared, baked model (`quant.prepare` + `bake_in_place`) with the stored tensors loaded and
    its weight quantizers put back with their stored scales."""
    plain, scales = _decode_codes(state, quantization, source)
    load_state(skeleton, plain, source)
    for layer, bits in quantization.bits.items():
        module = skeleton.get_submodule(layer)
        mask_from_zeros(module, "weight")
        quantizer = _quantizer(module.weight, layer, bits, quantization, scales.get(layer))
        parametrize.register_parametrization(module, "weight", quantizer)
    reattach_recurrent_quantizers(skeleton, quantization.recurrent, scales)
    set_mode(skeleton, "quantize")
    return skeleton.eval()
