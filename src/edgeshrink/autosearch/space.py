"""What a search samples: a recipe from the stages' own search spaces, or an architecture from a zoo family's.

A recipe search has a template, the ordered stage types to draw from (by default what pays on the device: on a
microcontroller, whose TFLite Micro file keeps pruning and sharing, `channels, prune, share`; elsewhere, where
runtimes store weights dense, `channels, quantize`). Each stage of a template with more than one may also be left
out (`STAGE.enabled`). Every value comes from the space the stage declares next to its config
(`StageConfig.search_space`), so a new stage is searchable when it declares one.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgeshrink.devices.schema import Device
from edgeshrink.errors import ConfigError
from edgeshrink.hardware import channel_block
from edgeshrink.io.settings import EncodeConfig
from edgeshrink.recipes import Recipe
from edgeshrink.stages.base import LayerInfo, SpaceContext, Suggest, list_stages, stage_config_class
from edgeshrink.weights import prunable_weights

DEFAULT_STAGES = {"mcu": ("channels", "prune", "share")}
OTHER_STAGES = ("channels", "quantize")
# Channel multiples a runtime's kernels work in: CMSIS-NN's int8 kernels take 4 channels at a time on Cortex-M
# (arm_nn_mat_mult_kernel_s8_s16: 2 rows x 2 columns, and 4-lane SIMD loads), XNNPACK on phones 8 (NEON),
# ONNX Runtime here its AVX2/AVX-512 block (hardware.channel_block).
CHANNEL_MULTIPLES = {"mcu": (1, 4, 8), "phone": (4, 8), "sbc": (4, 8), "gpu-board": (8, 16)}


def default_stages(device: Device) -> tuple[str, ...]:
    return DEFAULT_STAGES.get(device.kind, OTHER_STAGES)


def check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    """The template, each a registered stage, each once (a name is one space)."""
    known = list_stages()
    unknown = [s for s in stages if s not in known]
    if unknown or not stages:
        raise ConfigError(
            f"cannot search stage {unknown[0] if unknown else '(none)'!r}: choose from {', '.join(known)}"
        )
    if len(set(stages)) != len(stages):
        raise ConfigError(f"stages {', '.join(stages)}: name each stage once")
    return tuple(stages)


def channel_multiples(device: Device) -> tuple[int, ...]:
    """The channel multiples a search may round to for this device's runtime (the first is its default)."""
    if device.kind in CHANNEL_MULTIPLES:
        return CHANNEL_MULTIPLES[device.kind]
    block = channel_block()
    return (block, block // 2) if block > 4 else (block,)


def space_context(model: nn.Module, device: Device, max_epochs: int, per_layer: bool) -> SpaceContext:
    """The model's prunable layers and the device's channel multiples, for the stages' spaces."""
    layers = tuple(
        LayerInfo(name, "conv" if "Conv" in type(module).__name__ else "linear", module.weight.numel())
        for name, module in prunable_weights(model)
    )
    return SpaceContext(layers, max_epochs=max_epochs, round_to=channel_multiples(device), per_layer=per_layer)


def sample_recipe(trial: Suggest, stages: Sequence[str], ctx: SpaceContext, name: str) -> Recipe:
    """A recipe of the template's stages (each possibly left out), each config from its stage's space."""
    chosen = []
    for kind in stages:
        if len(stages) > 1 and not trial.suggest_categorical(f"{kind}.enabled", [True, False]):
            continue
        chosen.append(stage_config_class(kind).search_space(trial, ctx, kind))
    description = "found by edgeshrink search: " + (", ".join(s.type for s in chosen) or "no stage")
    return Recipe(name=name, description=description, stages=chosen, encode=EncodeConfig())
