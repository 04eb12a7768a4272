"""What a profiled model costs on a device: fit in flash and RAM, latency, energy. All estimates.

Latency, per operation (a roofline with a fixed dispatch cost):

    t_op = op_overhead + max(MACs / MAC rate, bytes moved / memory bandwidth)

bytes moved = the activations it reads and writes + its weights as stored (dense bytes x stored /
dense fp32 bytes). A container stores nonzeros only, so for one the MACs are the nonzero MACs (a
runtime that reads it skips zero weights, as EIE does); dense files use dense MACs.
"""

from __future__ import annotations

import math

from edgeshrink.devices.schema import Device
from edgeshrink.measure.energy import estimate_energy


def stored_weight_bytes(profile: dict) -> int:
    """Bytes of the weights as the artifact ships them (the file, else the container it would be)."""
    w = profile["weights"]
    return int(w["file"] or w["container"] or w["dense_fp32"])


def fit(profile: dict, device: Device) -> dict:
    """Whether the weights fit flash and weights + peak activations fit RAM, and by how much to shrink."""
    weights = stored_weight_bytes(profile)
    peak = profile["activations"]["peak_bytes"]
    ram_for_weights = device.ram_bytes - peak
    factor_flash = weights / device.flash_bytes
    factor_ram = weights / ram_for_weights if ram_for_weights > 0 else math.inf
    return {
        "flash": {"need": weights, "have": device.flash_bytes, "ok": weights <= device.flash_bytes},
        "ram": {"need": weights + peak, "have": device.ram_bytes, "ok": weights + peak <= device.ram_bytes},
        "activations_alone_fit": peak <= device.ram_bytes,
        "shrink_factor": max(factor_flash, factor_ram, 1.0),
        "assumption": "weights stay in the stored format in flash and in RAM; activations at batch 1",
    }


def estimate_latency(profile: dict, device: Device) -> dict:
    skips = profile["skips_zeros"]
    rate = device.int8_macs_per_s if profile["dtype"] == "int8" else device.fp32_macs_per_s
    dense = profile["weights"]["dense_fp32"] or 1
    ratio = stored_weight_bytes(profile) / dense
    compute = memory = total = 0.0
    for op in profile["ops"]:
        macs = op["nonzero_macs"] if skips else op["macs"]
        moved = op["activation_bytes"] + op["weight_bytes"] * ratio
        c, m = macs / rate, moved / device.memory_bandwidth_bytes_per_s
        compute, memory = compute + c, memory + m
        total += device.op_overhead_s + max(c, m)
    return {
        "ms": total * 1e3,
        "compute_ms": compute * 1e3,
        "memory_ms": memory * 1e3,
        "overhead_ms": device.op_overhead_s * len(profile["ops"]) * 1e3,
        "ops": len(profile["ops"]),
        "macs": "nonzero" if skips else "dense",
        "provenance": "estimated: per operation, overhead + max(MACs / MAC rate, bytes / bandwidth), "
        f"{device.name} figures",
    }


def estimate_device_energy(profile: dict, device: Device, latency_ms: float) -> dict:
    """Horowitz op-table energy; and, where the device states its power, board power x latency."""
    macs = profile["macs"]["nonzero" if profile["skips_zeros"] else "dense"]
    table = estimate_energy(
        macs,
        stored_weight_bytes(profile),
        sum(op["activation_bytes"] for op in profile["ops"]),
        profile["activations"]["peak_bytes"],
        device.sram_bytes,
        profile["dtype"],
    )
    out = {"op_table": table}
    if device.active_power_w is not None:
        out["board"] = {
            "uj": device.active_power_w * latency_ms * 1e3,
            "provenance": f"estimated: {device.active_power_w} W board power x estimated latency",
        }
    return out


def device_energy_uj(energy: dict) -> float:
    """The figure compared with the radio: board power x time where known (realistic), else the op table."""
    return energy["board"]["uj"] if "board" in energy else energy["op_table"]["uj"]


def estimate_on_device(profile: dict, device: Device) -> dict:
    latency = estimate_latency(profile, device)
    return {
        "device": device.name,
        "fit": fit(profile, device),
        "latency": latency,
        "energy": estimate_device_energy(profile, device, latency["ms"]),
    }
