"""How a container is written: the `encode` settings of a recipe (Deep Compression's stage 3).

Relative indices of the nonzeros and codebook indices are Huffman-coded (or fixed-width, to measure
what Huffman coding adds). `index_bits` is the width of a relative index before Huffman coding: the
paper used 8 bits for conv and 5 for fc layers; "auto" picks, per tensor, the width that gives the
smallest stream. These are the writer's settings, not a stage: they change the file, not the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field
from torch import nn

from edgeshrink.config import Config
from edgeshrink.encode.tensors import IndexBits
from edgeshrink.scope import Scope, per_layer, select_layers


class EncodeConfig(Config):
    type: Literal["encode"] = "encode"
    coding: Literal["huffman", "fixed"] = "huffman"
    index_bits: int | Literal["auto"] = Field("auto", description="relative-index width, 1..15 or auto")
    per_layer: dict[str, int | Literal["auto"]] = Field(default_factory=dict, description="selector -> index bits")

    def check(self, model: nn.Module) -> None:
        """Fail now, not after training, when a per-layer key matches no layer."""
        per_layer(model, select_layers(model, Scope(), "encode"), self.per_layer, self.index_bits, "encode")


def index_bits_for(model: nn.Module, cfg: EncodeConfig) -> Callable[[str], IndexBits]:
    """Map a state-dict key to its relative-index width under `cfg`."""
    if not cfg.per_layer:
        return lambda key: cfg.index_bits
    layers = select_layers(model, Scope(), "encode")
    widths = per_layer(model, layers, cfg.per_layer, cfg.index_bits, "encode")
    by_tensor = {f"{name}.weight": width for name, width in widths.items()}
    return lambda key: by_tensor.get(key, cfg.index_bits)
