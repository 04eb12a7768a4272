"""Weight bytes per storage format: dense fp32, as the runtime holds them, int8, the container, the file."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeshrink.measure.graph import OpGraph

PROVENANCE = {
    "dense_fp32": "computed: parameters x 4 bytes",
    "stored": "computed: parameters as a runtime holds them (integer weights 1 byte, fp16 2 bytes, fp32 4 bytes)",
    "int8": "computed: parameters x 1 byte + one fp32 scale per tensor",
    "container": "measured: bytes of the .eshrink container (the file, or this model serialised)",
    "file": "measured: size of the artifact file",
}


@dataclass
class WeightSizes:
    parameters: int
    nonzeros: int
    dense_fp32: int
    stored: int
    int8: int
    container: int | None
    file: int | None
    provenance: dict[str, str] = field(default_factory=lambda: dict(PROVENANCE))


def _parameter_names(graph: OpGraph) -> list[str]:
    """Each parameter once (graphs may name one array twice, e.g. a weight and its transpose)."""
    seen: dict[int, str] = {}
    for name, w in graph.weights.items():
        wanted = name in graph.parameters if graph.parameters is not None else np.issubdtype(w.dtype, np.floating)
        if wanted:
            seen.setdefault(id(w), name)
    return list(seen.values())


def weight_sizes(graph: OpGraph, container_bytes: int | None, file_bytes: int | None) -> WeightSizes:
    """Bytes of the graph's parameters (the floating-point weights, or the named parameters of integer
    files) in each format, with the measured container and file sizes."""
    names = _parameter_names(graph)
    arrays = [graph.weights[n] for n in names]
    params = sum(w.size for w in arrays)
    return WeightSizes(
        parameters=params,
        nonzeros=int(sum(np.count_nonzero(w) for w in arrays)),
        dense_fp32=params * 4,
        stored=sum(graph.stored_bytes(n) for n in names),
        int8=params + 4 * len(arrays),
        container=container_bytes,
        file=file_bytes,
    )
