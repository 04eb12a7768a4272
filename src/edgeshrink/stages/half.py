"""The `half` stage: float16 weights and activations (float32 in and out)."""

from __future__ import annotations

from typing import Literal

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
    record = StageRecord(
        stage="half",
        config=cfg.model_dump(mode="json"),
        accuracy=ctx.accuracy(wrapped),
        notes=["weights and activations in float16; inputs and outputs stay float32"],
    )
    return artifact.with_record(record, model=wrapped, precision="float16")
