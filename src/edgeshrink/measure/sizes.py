"""Weight bytes per storage format: dense fp32, int8, the .eshrink container, the file as written."""

from __future__ import annotations

import numpy as np


def weight_sizes(
    weights: dict[str, np.ndarray],
    container_bytes: int | None,
    file_bytes: int | None,
    parameters: set[str] | None = None,
) -> dict:
    """Bytes of the parameters stored densely at 32 and 8 bits, and the measured container / file sizes.
    Parameters are the floating-point weights, or the named `parameters` (integer files).

    int8 is one byte per weight plus one fp32 scale per tensor (per-tensor symmetric quantization).
    """
    if parameters is not None:
        floats = _unique({k: w for k, w in weights.items() if k in parameters})
    else:
        floats = [w for w in _unique(weights) if np.issubdtype(w.dtype, np.floating)]
    params = sum(w.size for w in floats)
    return {
        "parameters": params,
        "nonzeros": int(sum(np.count_nonzero(w) for w in floats)),
        "dense_fp32": params * 4,
        "int8": params + 4 * len(floats),
        "container": container_bytes,
        "file": file_bytes,
        "provenance": {
            "dense_fp32": "computed: parameters x 4 bytes",
            "int8": "computed: parameters x 1 byte + one fp32 scale per tensor",
            "container": "measured: bytes of the .eshrink container (the file, or this model serialised)",
            "file": "measured: size of the artifact file",
        },
    }


def _unique(weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Each weight array once (graphs may name the same array twice, e.g. a weight and its transpose)."""
    seen: dict[int, np.ndarray] = {}
    for w in weights.values():
        seen.setdefault(id(w), w)
    return list(seen.values())
