"""The `half` stage: float16 weights and activations (float32 in and out)."""

from __future__ import annotations

from typing import Literal

import torch

from edgeshrink.artifact import Artifact, StageRecord
from edgeshrink.errors import ConfigError
from edgeshrink.quant.half import HalfPrecision
from edgeshrink.stages.base import SpaceContext, StageConfig, StageContext, Suggest, register_stage
from edgeshrink.train import TrainConfig
from edgeshrink.weights import baked_copy


class HalfConfig(StageConfig):
    type: Literal["half"] = "half"
    finetune: TrainConfig = TrainConfig(epochs=0)

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> HalfConfig:
        """Nothing to choose: float16 is float16 (a search decides only whether the stage runs)."""
        return cls()


@register_stage(HalfConfig)
def half(artifact: Artifact, cfg: HalfConfig, ctx: StageContext) -> Artifact:
    if artifact.quantization is not None or artifact.precision != "float32":
        raise ConfigError("half needs a float32 model: a quantized or float16 model cannot be made float16 again")
    wrapped = HalfPrecision(baked_copy(artifact.model)).eval()
    _require_runs_in_half(wrapped, artifact.example_input)
    record = StageRecord(
        stage="half",
        config=cfg.model_dump(mode="json"),
        accuracy=ctx.accuracy(wrapped),
        notes=["weights and activations in float16; inputs and outputs stay float32"],
    )
    return artifact.with_record(record, model=wrapped, precision="float16")


def _require_runs_in_half(wrapped: HalfPrecision, example: torch.Tensor | None) -> None:
    """ConfigError, before any measuring, when the float16 model cannot run on the example input (the usual cause:
    a forward that makes float32 tensors of its own, `x.float() / 255` on uint8 images, meets float16 weights),
    instead of a failure deep inside evaluation."""
    if example is None:
        return
    try:
        with torch.no_grad():
            wrapped(example[:1])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"half: the model does not run in float16 ({first}); where its forward makes float32 tensors of its own "
            "(x.float(), or torch.zeros / torch.tensor without a dtype), make them in a weight's dtype "
            "(x.to(self.conv.weight.dtype)); or use an int8 recipe"
        ) from None
