"""What a device file and a network profile must state; every figure names its source."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeshrink.errors import ConfigError

DEVICE_FIGURES = (
    "flash_bytes",
    "ram_bytes",
    "sram_bytes",
    "fp32_macs_per_s",
    "int8_macs_per_s",
    "memory_bandwidth_bytes_per_s",
    "op_overhead_s",
    "active_power_w",
)
NETWORK_FIGURES = ("uplink_bytes_per_s", "rtt_s", "tx_nj_per_byte", "wait_power_w", "duty_cycle")


def _require_sources(obj: BaseModel, figures: tuple[str, ...]) -> None:
    stated = [f for f in figures if getattr(obj, f) is not None]
    missing = [f for f in stated if not obj.sources.get(f)]  # type: ignore[attr-defined]
    if missing:
        raise ValueError(f"sources.{missing[0]} is missing: every figure needs a source")


class Device(BaseModel):
    """A device's capacity, speed and power; figures from datasheets (or measured, for this machine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str
    kind: Literal["mcu", "sbc", "phone", "gpu-board", "server", "host"]
    flash_bytes: int = Field(gt=0, description="non-volatile storage that holds the model file")
    ram_bytes: int = Field(gt=0, description="RAM for weights and activations")
    sram_bytes: int = Field(gt=0, description="on-chip SRAM or last-level cache: weights read from it when they fit")
    fp32_macs_per_s: float = Field(gt=0, description="achieved fp32 multiply-accumulates per second")
    int8_macs_per_s: float = Field(gt=0, description="achieved int8 multiply-accumulates per second")
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    op_overhead_s: float = Field(ge=0, description="fixed time per operation (dispatch, kernel launch)")
    active_power_w: float | None = Field(None, gt=0, description="board power while computing")
    threads: int = Field(1, ge=1)
    measured: bool = False
    sources: dict[str, str]

    @model_validator(mode="after")
    def _sources(self) -> Device:
        _require_sources(self, DEVICE_FIGURES)
        return self


class Network(BaseModel):
    """A link from the device to a server: uplink speed, round trip, radio energy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str
    available: bool = True
    uplink_bytes_per_s: float = Field(ge=0)
    rtt_s: float = Field(ge=0)
    tx_nj_per_byte: float = Field(ge=0, description="radio energy per transmitted byte")
    wait_power_w: float = Field(ge=0, description="radio power while waiting for the answer (one RTT)")
    duty_cycle: float = Field(1.0, gt=0, le=1, description="fraction of time the radio may transmit")
    max_payload_bytes: int | None = Field(None, gt=0)
    sources: dict[str, str]

    @model_validator(mode="after")
    def _sources(self) -> Network:
        if self.available:
            _require_sources(self, NETWORK_FIGURES)
        return self


def first_error(exc: ValidationError) -> str:
    """One line: the field and what is wrong with it."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return f"missing field {where!r}"
    if err["type"] == "extra_forbidden":
        return f"unknown field {where!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def parse(cls: type[BaseModel], data: dict, source: str):
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error(exc)}") from None
