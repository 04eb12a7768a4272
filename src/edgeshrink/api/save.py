"""`edgeshrink.save`: write a module, an Artifact or a compress() result as an .eshrink container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgeshrink.api.inputs import to_artifact
from edgeshrink.encode.container import PackResult
from edgeshrink.io import EncodeConfig
from edgeshrink.io import save as save_artifact


def save(
    model_or_artifact: Any,
    path: str | Path,
    settings: EncodeConfig | dict | None = None,
    example_input: torch.Tensor | None = None,
) -> PackResult:
    """Write the smallest exact file of a model (`settings`: Huffman or fixed-width codes, index widths).
    `example_input` records the input the model takes, so that `load` can check the rebuilt model."""
    if isinstance(settings, dict):
        settings = EncodeConfig(**settings)
    return save_artifact(to_artifact(model_or_artifact, example_input), path, settings)
