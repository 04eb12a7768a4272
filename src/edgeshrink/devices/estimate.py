"""What a measured model costs on a device: which file it runs from, fit in flash and RAM, latency,
energy. All estimates, each naming its assumptions.

The fit uses the bytes of the file the device's runtime loads and the RAM that runtime needs:
- an .eshrink container: no runtime executes it, so it sits in flash and is decoded to dense weights
  in RAM first (the decoded bytes count, not the container's);
- a .tflite file: in flash; TFLite Micro on a microcontroller reads the weights in place (no weight
  RAM), LiteRT elsewhere packs them into RAM;
- an .onnx file: loaded into RAM by ONNX Runtime;
- a .pte program (ExecuTorch, XNNPACK): in flash, and its weights in RAM (about the file's bytes);
- a checkpoint or in-memory model: the dense weights an exported file of it would hold.

Latency, per operation (a roofline with a fixed dispatch cost), with dense MACs: no runtime here skips
multiplications by pruned weights.

    t_op = op_overhead + max(MACs / MAC rate, bytes moved / memory bandwidth)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeshrink.devices.schema import Device
from edgeshrink.measure.energy import OpTableEnergy, estimate_energy
from edgeshrink.measure.profile import ModelCosts


@dataclass
class Deployment:
    """The file a device runs and what it needs: bytes in flash, weight bytes in RAM."""

    file: str
    runtime: str
    flash_bytes: int
    ram_weight_bytes: int
    note: str


@dataclass
class Need:
    need: int
    have: int
    ok: bool


@dataclass
class Fit:
    flash: Need
    ram: Need
    activations_alone_fit: bool
    shrink_factor: float
    deployment: Deployment


@dataclass
class LatencyEstimate:
    ms: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    ops: int
    provenance: str


@dataclass
class BoardEnergy:
    uj: float
    provenance: str


@dataclass
class EnergyEstimate:
    op_table: OpTableEnergy
    board: BoardEnergy | None

    @property
    def uj(self) -> float:
        """The figure compared with the radio: board power x time where known (realistic), else the op table."""
        return self.board.uj if self.board is not None else self.op_table.uj


@dataclass
class DeviceEstimate:
    device: str
    fit: Fit
    latency: LatencyEstimate
    energy: EnergyEstimate


def decodes_weights(costs: ModelCosts) -> bool:
    """True for a TFLite Micro file whose weights its DECODE operator writes into the arena."""
    from edgeshrink.measure.tflite_graph import DECODE_OP

    return any(op.op == DECODE_OP for op in costs.ops)


def deployment(costs: ModelCosts, device: Device) -> Deployment:
    """The file this device would run and its memory needs (see the module docstring)."""
    kind, w = costs.source.kind, costs.weights
    if kind in ("container", "run-folder"):
        path = costs.source.path + ("/model.eshrink" if kind == "run-folder" else "")
        return Deployment(
            path,
            "a dense runtime after decoding",
            int(w.container or w.file or w.stored),
            w.stored,
            "no runtime executes .eshrink: the container sits in flash and is decoded to dense weights in RAM, "
            "so pruning and sharing save flash only (export it for the device's runtime)",
        )
    if kind == "tflite":
        mcu = device.kind == "mcu"
        runtime = "TFLite Micro" if mcu else "LiteRT"
        note = "weights are read from flash in place" if mcu else "LiteRT's XNNPACK packs the weights into RAM"
        if mcu and decodes_weights(costs):
            note = "compressed weights are decoded from flash into the arena, in the peak, before the op reading them"
        return Deployment(costs.source.path, runtime, int(w.file or w.stored), 0 if mcu else w.stored, note)
    if kind == "pte":
        return Deployment(
            costs.source.path,
            "ExecuTorch (XNNPACK)",
            int(w.file or w.stored),
            int(w.file or w.stored),
            "estimated: XNNPACK holds the program's weights in RAM, about the file's bytes",
        )
    if kind == "onnx":
        return Deployment(
            costs.source.path,
            "ONNX Runtime",
            int(w.file or w.stored),
            w.stored,
            "ONNX Runtime loads the weights into RAM",
        )
    return Deployment(
        f"{costs.source.path} exported (ONNX / TFLite)",
        "a dense runtime",
        w.stored,
        w.stored,
        f"estimated: the weights at {costs.dtype} as an exported file stores them; export it to measure the file",
    )


def fit(costs: ModelCosts, device: Device) -> Fit:
    """Whether the deployed file fits flash and its RAM needs plus peak activations fit RAM, and how much
    the weights must shrink otherwise."""
    d = deployment(costs, device)
    peak = costs.activations.peak_bytes
    ram_for_weights = device.ram_bytes - peak
    factor_flash = d.flash_bytes / device.flash_bytes
    factor_ram = d.ram_weight_bytes / ram_for_weights if ram_for_weights > 0 else math.inf
    return Fit(
        flash=Need(d.flash_bytes, device.flash_bytes, d.flash_bytes <= device.flash_bytes),
        ram=Need(d.ram_weight_bytes + peak, device.ram_bytes, d.ram_weight_bytes + peak <= device.ram_bytes),
        activations_alone_fit=peak <= device.ram_bytes,
        shrink_factor=max(factor_flash, factor_ram, 1.0),
        deployment=d,
    )


def estimate_latency(costs: ModelCosts, device: Device) -> LatencyEstimate:
    rate = device.int8_macs_per_s if costs.dtype == "int8" else device.fp32_macs_per_s
    compute = memory = total = 0.0
    for op in costs.ops:
        c = op.macs / rate
        m = (op.activation_bytes + op.weight_bytes) / device.memory_bandwidth_bytes_per_s
        compute, memory = compute + c, memory + m
        total += device.op_overhead_s + max(c, m)
    return LatencyEstimate(
        total * 1e3,
        compute * 1e3,
        memory * 1e3,
        device.op_overhead_s * len(costs.ops) * 1e3,
        len(costs.ops),
        f"estimated: per operation, overhead + max(dense MACs / MAC rate, bytes / bandwidth), {device.name} figures",
    )


def estimate_device_energy(costs: ModelCosts, device: Device, latency_ms: float) -> EnergyEstimate:
    """Horowitz op-table energy; and, where the device states its power, board power x latency."""
    table = estimate_energy(
        costs.macs.dense,
        costs.weights.stored,
        sum(op.activation_bytes for op in costs.ops),
        costs.activations.peak_bytes,
        device.sram_bytes,
        costs.dtype,
    )
    board = None
    if device.active_power_w is not None:
        board = BoardEnergy(
            device.active_power_w * latency_ms * 1e3,
            f"estimated: {device.active_power_w} W board power x estimated latency",
        )
    return EnergyEstimate(table, board)


def estimate_on_device(costs: ModelCosts, device: Device) -> DeviceEstimate:
    latency = estimate_latency(costs, device)
    return DeviceEstimate(device.name, fit(costs, device), latency, estimate_device_energy(costs, device, latency.ms))
