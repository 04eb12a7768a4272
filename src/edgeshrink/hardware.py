"""What this machine's CPU can do, as far as integer kernels care (read from /proc/cpuinfo)."""

from __future__ import annotations

import functools
import platform

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not available)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_weights_saturate() -> bool:
    """True on x86 CPUs without VNNI, where ONNX Runtime's uint8 x int8 kernels add pairs of products in a
    16-bit register that saturates unless weights use 7 bits of range."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    return not (VNNI_FLAGS & cpu_flags())


def channel_block() -> int:
    """The channel multiple ONNX Runtime's CPU kernels work in here: 16 floats per AVX-512 register, 8 per
    AVX2 one (measured: ResNet-8x4 at half the MACs, batch 32, 0.51x with multiples of 16 against 0.55x with
    8 on AVX-512; docs/structured.md); 4 (a 128-bit NEON register) on other CPUs."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return 4
    return 16 if "avx512f" in cpu_flags() else 8
