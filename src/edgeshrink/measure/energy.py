"""Energy per inference, an estimate from a per-operation table (Horowitz, "Computing's energy
problem", ISSCC 2014, 45 nm, 0.9 V).

    E = MACs x (E_mul + E_add)                       at the compute bit-width
      + weight bytes / 8 x E_access(weight memory)   each weight read once per inference
      + activation bytes moved / 8 x E_access(SRAM)  each operation reads its inputs, writes its outputs

Weights are read from on-chip SRAM when they fit it next to the peak activations, otherwise from
DRAM or flash (the DRAM figure stands in for both). SRAM energy per 64-bit access grows with the
array: the table gives 10 pJ at 8 KB and 100 pJ at 1 MB; in between (and beyond) we follow the power
law through those two points, which also gives 19 pJ at 32 KB (the table's 32 KB figure: 20 pJ).
Arithmetic and memory only: control, leakage and the rest of the board are not in it, so it is a
lower bound on what a real chip draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# pJ per operation, Horowitz ISSCC 2014 (45 nm).
OPS_PJ = {
    "fp32": {"mul": 3.7, "add": 0.9},
    "fp16": {"mul": 1.1, "add": 0.4},
    "int8": {"mul": 0.2, "add": 0.03},
}
SRAM_8KB_PJ = 10.0  # per 64-bit access
SRAM_1MB_PJ = 100.0
DRAM_PJ = (1300.0, 2600.0)  # per 64-bit access, the table's range
SOURCE = "Horowitz, Computing's energy problem (and what we can do about it), ISSCC 2014, 45 nm"
_ALPHA = math.log(SRAM_1MB_PJ / SRAM_8KB_PJ) / math.log(1024 / 8)


def sram_access_pj(sram_bytes: int) -> float:
    """pJ per 64-bit read of an SRAM of `sram_bytes` (10 pJ at 8 KB or less, 100 pJ at 1 MB)."""
    kb = max(sram_bytes / 1024, 8.0)
    return SRAM_8KB_PJ * (kb / 8.0) ** _ALPHA


@dataclass
class OpTableEnergy:
    """Energy of one inference (µJ) with its parts, the memory the weights come from, and the range
    that the DRAM figure's spread gives."""

    uj: float
    uj_range: tuple[float, float]
    compute_uj: float
    weights_uj: float
    activations_uj: float
    weights_from: str
    dtype: str
    provenance: str


def estimate_energy(
    macs: int,
    weight_bytes: int,
    activation_bytes_moved: int,
    peak_activation_bytes: int,
    sram_bytes: int,
    dtype: str = "fp32",
) -> OpTableEnergy:
    """The op-table estimate (see the module docstring). Every figure here is an estimate."""
    op = OPS_PJ[dtype]
    compute = macs * (op["mul"] + op["add"])
    sram = sram_access_pj(sram_bytes)
    in_sram = weight_bytes + peak_activation_bytes <= sram_bytes
    words = math.ceil(weight_bytes / 8)
    weights_low = words * (sram if in_sram else DRAM_PJ[0])
    weights_high = words * (sram if in_sram else DRAM_PJ[1])
    activations = math.ceil(activation_bytes_moved / 8) * sram
    low = compute + weights_low + activations
    high = compute + weights_high + activations
    return OpTableEnergy(
        uj=(low + high) / 2 / 1e6,
        uj_range=(low / 1e6, high / 1e6),
        compute_uj=compute / 1e6,
        weights_uj=(weights_low + weights_high) / 2e6,
        activations_uj=activations / 1e6,
        weights_from="on-chip SRAM" if in_sram else "DRAM or flash",
        dtype=dtype,
        provenance=f"estimated: {SOURCE}; arithmetic and memory accesses only (a lower bound)",
    )
