"""Encoding (Deep Compression, stage 3): write the model as an `.eshrink` container.

Relative indices of the nonzeros and codebook indices are Huffman-coded (or fixed-width, to measure
what Huffman coding adds). `index_bits` is the width of a relative index before Huffman coding: the
paper used 8 bits for conv and 5 for fc layers; "auto" picks, per tensor, the width that gives the
smallest stream.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field
from torch import nn

from edgeshrink.encode.container import IndexBits, pack
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import StageConfig, StageContext, StageRecord, register_stage


class EncodeConfig(StageConfig):
    type: Literal["encode"] = "encode"
    coding: Literal["huffman", "fixed"] = "huffman"
    index_bits: int | Literal["auto"] = Field("auto", description="relative-index width, 1..15 or auto")
    per_layer: dict[str, int | Literal["auto"]] = Field(default_factory=dict, description="selector -> index bits")


def index_bits_for(model: nn.Module, cfg: EncodeConfig) -> Callable[[str], IndexBits]:
    """Map a state-dict key to its relative-index width under `cfg`."""
    layers = select_layers(model, Scope(), "encode")
    widths = per_layer(model, layers, cfg.per_layer, cfg.index_bits, "encode")
    by_tensor = {f"{name}.weight": width for name, width in widths.items()}
    return lambda key: by_tensor.get(key, cfg.index_bits)


@register_stage(EncodeConfig)
def encode(model: nn.Module, cfg: EncodeConfig, ctx: StageContext) -> StageRecord:
    out: Path = ctx.extras["container_path"]
    result = pack(
        model,
        out,
        coding=cfg.coding,
        index_bits=index_bits_for(model, cfg),
        arch=ctx.extras.get("arch"),
        meta=ctx.extras.get("meta"),
    )
    ctx.extras["pack_result"] = result
    rows = [{"tensor": t.name, "encoding": t.encoding, "bytes": t.nbytes} for t in result.tensors]
    return StageRecord(
        stage="encode",
        config=cfg.model_dump(mode="json"),
        layers=rows,
        notes=[f"wrote {out.name}: {result.nbytes} bytes"],
    )
