"""`Artifact`: one typed value for "a compressed model", what every stage, command and exporter takes.

It holds the model (an `nn.Module` that computes what the file computes), its architecture record
(`Arch`), its quantization and precision as typed data, what each stage did (`StageRecord`s), and,
once it has been saved or loaded, where its file is. Stages return a new artifact; `edgeshrink.io`
saves and loads them; nothing else builds a model from a file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from edgeshrink.architecture import Arch, InputShape, recorded_shape
from edgeshrink.batch_checks import require_tensor_output

Precision = Literal["float32", "float16"]
Kind = Literal["module", "checkpoint", "container", "run-folder"]


class Quantization(BaseModel):
    """Which layers have integer weights, how wide, and how: what `io.load` needs to rebuild the
    fake-quantized model (`quant.prepare` is deterministic given this)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    bits: dict[str, int] = Field(description="layer -> weight bits (2..8)")
    group_size: int = Field(0, ge=0, description="sub-byte weights: one scale per this many input channels")
    reduced_range: bool = Field(False, description="every 8-bit layer's weights in -63..63 (x86 without VNNI)")
    reduced_layers: list[str] = Field(
        [], description="only these layers' 8-bit weights in -63..63 (their calibration inputs overflow 16 bits)"
    )
    per_tensor: list[str] = Field([], description="layers on one grid per tensor (shared weights)")
    rewritten: list[str] = Field([], description="attention modules decomposed before quantizing")
    split_hardswish: bool = Field(False, description="hardswish quantized as x * hardsigmoid(x) (QLinearMul)")
    sliced: bool = Field(False, description="slices of a quantized tensor keep its grid (LiteRT's STRIDED_SLICE)")
    recurrent: dict[str, int] = Field(
        {}, description="GRU/LSTM/RNN weight tensor -> bits: integer codes, one scale per row, float compute"
    )
    activations: str = "uint8 grid, per tensor"

    @field_validator("bits", "recurrent")
    @classmethod
    def _widths(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not 2 <= v <= 8}
        if bad:
            raise ValueError(f"weight bits must be 2..8: {bad}")
        return value

    def weight_bits(self) -> list[int]:
        return sorted(set(self.bits.values()))


class StageRecord(BaseModel):
    """What a stage did: its config, per-layer details, accuracy after it, fine-tuning history, time."""

    model_config = ConfigDict(extra="forbid")
    stage: str
    config: dict
    layers: list[dict] = []
    accuracy: float | None = None
    history: list[dict] = []
    edits: list[dict] = []  # structural edits as data (channels removed), replayable: see architecture.py
    seconds: float = 0.0
    notes: list[str] = []
    budget_met: bool | None = None  # None: the stage had no accuracy budget, or nothing to measure it with


@dataclass
class Artifact:
    """A (compressed) model and everything needed to save, load, measure and export it."""

    model: nn.Module
    arch: Arch = field(default_factory=Arch)
    quantization: Quantization | None = None
    precision: Precision = "float32"
    records: list[StageRecord] = field(default_factory=list)
    example_input: torch.Tensor | None = None  # one input at batch 1 (shape and dtype the model takes)
    meta: dict[str, Any] = field(default_factory=dict)  # recipe name, seed: carried into the file
    kind: Kind = "module"
    path: Path | None = None  # the file it was loaded from or saved to
    file_bytes: int | None = None
    report: dict | None = None  # a run folder's report.json

    def replace(self, **changes: Any) -> Artifact:
        return dataclasses.replace(self, **changes)

    def with_record(self, record: StageRecord, **changes: Any) -> Artifact:
        """The artifact after a stage: `record` appended, other fields changed as given."""
        return self.replace(records=[*self.records, record], **changes)

    @property
    def is_quantized(self) -> bool:
        return self.quantization is not None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """One example's shape without the batch dimension, when known."""
        if self.example_input is not None:
            return InputShape.of(self.example_input)
        if self.arch.channels is not None:
            return recorded_shape(self.arch.channels)
        if self.arch.input_shape:
            return tuple(self.arch.input_shape)
        if self.arch.model:
            from edgeshrink.models import model_entry

            return tuple(model_entry(self.arch.model).input_shape)
        return None

    def example(self) -> torch.Tensor | None:
        """An input at batch 1 (zeros of the recorded shape when no real example is kept)."""
        if self.example_input is not None:
            return self.example_input[:1]
        shape = self.input_shape
        return None if shape is None else torch.zeros(1, *shape)

    @property
    def compute_dtype(self) -> str:
        """What the weights compute in: int8 (any integer weights), fp16 or fp32."""
        if self.quantization is not None:
            return "int8"
        return "fp16" if self.precision == "float16" else "fp32"

    def describe(self) -> str:
        """A short label: 'int8', 'w4/8a8', 'fp16', 'fp32'."""
        if self.quantization is None:
            return self.compute_dtype
        bits = self.quantization.weight_bits()
        return "int8" if bits == [8] else "w" + "/".join(map(str, bits)) + "a8"


def require_one_output(model: nn.Module, example: torch.Tensor | None) -> None:
    """ConfigError unless `model` returns one tensor: evaluation, parity checks and every exported file read
    one output. A tuple or dict (logits and an embedding) is refused before any work, naming the fix."""
    if example is None:
        return
    was_training = model.training  # (io's eval_mode sits above this module's layer)
    try:
        with torch.no_grad():
            out = model.eval()(example[:1])
    finally:
        model.train(was_training)
    require_tensor_output(out)
