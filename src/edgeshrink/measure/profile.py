"""What a model is and costs, measured here: counts, MACs, weight bytes, peak activations, and latency on
this machine (`ModelCosts`). Device estimates are `devices.estimate`'s job, the typed `Profile` that
joins both is `edgeshrink.profile`'s.

A torch artifact is measured from its torch.export graph (quantized weights at their code width,
quantized activations at 1 byte); an exported .onnx or .tflite file from its own graph.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edgeshrink.artifact import Artifact
from edgeshrink.measure.graph import OpGraph, from_torch
from edgeshrink.measure.macs import MacSummary, mac_summary
from edgeshrink.measure.memory import ActivationMemory, peak_activation_memory
from edgeshrink.measure.sizes import WeightSizes, weight_sizes
from edgeshrink.measure.tflite_graph import DECODE_OP
from edgeshrink.runtimes.timing import Timing


@dataclass
class Source:
    """What was measured: the file (or an in-memory model), its kind, architecture and precision."""

    path: str
    kind: str  # module | checkpoint | container | run-folder | onnx | tflite | pte
    arch: dict | None
    precision: str  # fp32 | fp16 | int8 | w4/8a8 ... (the file's own for exported files)
    file_bytes: int | None


@dataclass
class OpCost:
    name: str
    layer: str
    op: str
    macs: int
    nonzero_macs: int
    activation_bytes: int
    weight_bytes: int


@dataclass
class ModelCosts:
    """Everything measured or computed about a model, each part stating its provenance."""

    source: Source
    input_shape: list[int]
    dtype: str  # what the weights compute in: int8 | fp16 | fp32
    macs: MacSummary
    weights: WeightSizes
    activations: ActivationMemory
    ops: list[OpCost]
    latency: dict[str, Timing] = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _op_costs(graph: OpGraph) -> list[OpCost]:
    rows = []
    for op in graph.ops:
        touched = {graph.root(t) for t in op.inputs + op.outputs}
        rows.append(
            OpCost(
                op.name,
                op.layer,
                op.target,
                op.macs,
                graph.nonzero_macs(op),
                sum(graph.sizes[t] for t in touched),
                graph.weight_bytes(op),
            )
        )
    return rows


def _costs(source: Source, graph: OpGraph, shape: list[int], dtype: str, container: int | None) -> ModelCosts:
    from edgeshrink.environment import environment

    return ModelCosts(
        source,
        shape,
        dtype,
        mac_summary(graph),
        weight_sizes(graph, container, source.file_bytes),
        peak_activation_memory(graph),
        _op_costs(graph),
        environment=environment(),
    )


def measure_artifact(artifact: Artifact) -> ModelCosts:
    """Costs of a torch artifact at batch 1 (no latency: see `measure_latency`)."""
    from edgeshrink.io import to_bytes

    example = artifact.example()
    if example is None:
        from edgeshrink.errors import ConfigError

        raise ConfigError("profiling this model needs an example input: pass example_input= (one batch)")
    # integer weights at one byte: the int8 kernels of LiteRT and ONNX Runtime hold sub-byte codes as bytes
    bits = {f"{k}.weight": 8 for k in (artifact.quantization.bits if artifact.quantization else {})}
    graph = from_torch(artifact.model, example[:1], bits)
    if artifact.kind in ("container", "run-folder"):
        container = artifact.file_bytes
    else:
        container = to_bytes(artifact, probe=False).nbytes
    path = str(artifact.path) if artifact.path else "<module>"
    source = Source(path, artifact.kind, artifact.arch.to_dict(), artifact.describe(), artifact.file_bytes)
    return _costs(source, graph, list(example.shape[1:]), artifact.compute_dtype, container)


def measure_file(path: str | Path, arena_bytes: int | None = None) -> ModelCosts:
    """Costs of an exported .onnx or .tflite file, from its own graph. A TFLM file's arena is measured in the
    interpreter unless its export already measured it (`arena_bytes`)."""
    import numpy as np

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        from edgeshrink.measure.onnx_graph import from_onnx, input_shape, load_onnx

        graph, shape, kind = from_onnx(path), list(input_shape(load_onnx(path))), "onnx"
    else:
        from edgeshrink.measure.tflite_graph import from_tflite, tflite_input_shape

        graph, shape, kind = from_tflite(path), list(tflite_input_shape(path)), "tflite"
    integer = any(w.dtype in (np.int8, np.uint8) for w in graph.weights.values())
    half = any(w.dtype == np.float16 for w in graph.weights.values())
    dtype = "int8" if integer else "fp16" if half else "fp32"
    source = Source(str(path), kind, None, dtype, path.stat().st_size)
    costs = _costs(source, graph, shape[1:], dtype, None)
    if any(op.target == DECODE_OP for op in graph.ops):
        costs.activations = _measured_arena(path, costs.activations, arena_bytes)
    return costs


def _measured_arena(path: Path, computed, arena: int | None = None):
    """A TFLM file's peak memory as TFLM allocates it (activations, decoded weights, bookkeeping): the
    smallest arena it loads and runs in, measured in the interpreter (the computed peak when the
    tflite-micro extra is missing)."""
    import importlib.util

    if arena is None and importlib.util.find_spec("tflite_micro") is None:
        return computed
    if arena is None:
        from edgeshrink.runtimes.tflm import minimal_arena

        arena = minimal_arena(path.read_bytes())
    return dataclasses.replace(
        computed,
        peak_bytes=arena,
        source=f"measured: the smallest tensor arena TensorFlow Lite Micro loads and runs the file in "
        f"(computed tensor liveness gave {computed.peak_bytes:,} B)",
    )
