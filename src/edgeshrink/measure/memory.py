"""Peak activation memory at batch 1, from the order in which tensors are produced and freed.

Walk the operations in execution order: a tensor is allocated when its operation runs and freed after
the last operation that reads it (or any view of it); graph inputs are live from the start, graph
outputs until the end; views share their base's storage. The peak is the largest total held at any
step, the figure an arena planner (TFLite Micro, ONNX Runtime) needs at least. Weights are not
counted here: they are the weight bytes, reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeshrink.measure.graph import OpGraph


@dataclass
class Step:
    """One operation for the liveness walk: storages it allocates and storages it reads."""

    name: str
    allocates: list[str]
    reads: list[str]


def peak_bytes(
    steps: list[Step], sizes: dict[str, int], live_at_start: list[str], live_at_end: list[str]
) -> tuple[int, str, list[str]]:
    """(peak bytes, the step at which it occurs, storages live then) of a sequence of steps."""
    last_use: dict[str, int] = {}
    for i, step in enumerate(steps):
        for s in step.allocates + step.reads:
            last_use[s] = i
    for s in live_at_end:
        last_use[s] = len(steps)
    live = dict.fromkeys(live_at_start)
    held = sum(sizes[s] for s in live)
    peak, at, peak_live = held, "inputs", list(live)
    for i, step in enumerate(steps):
        for s in step.allocates:
            if s not in live:
                live[s] = None
                held += sizes[s]
        if held > peak:
            peak, at, peak_live = held, step.name, list(live)
        for s in list(live):
            if last_use.get(s, -1) <= i:
                del live[s]
                held -= sizes[s]
    return peak, at, peak_live


def graph_steps(graph: OpGraph) -> list[Step]:
    """The graph's operations as steps over storages (views resolved to the tensor they view)."""
    steps = []
    for op in graph.ops:
        allocates = [o for o in op.outputs if graph.root(o) == o]
        reads = sorted({graph.root(i) for i in op.inputs} | {graph.root(o) for o in op.outputs})
        steps.append(Step(op.name, allocates, reads))
    return steps


@dataclass
class ActivationMemory:
    """Peak bytes of live activations (what an arena planner needs at least) and, for contrast, the
    sum of all activations."""

    peak_bytes: int
    at: str
    live_at_peak: list[str]
    sum_bytes: int
    input_bytes: int
    source: str
    batch: int = 1


def peak_activation_memory(graph: OpGraph) -> ActivationMemory:
    """Peak activation bytes of a graph (batch as built)."""
    roots = {graph.root(n) for n in graph.sizes}
    peak, at, live = peak_bytes(
        graph_steps(graph), graph.sizes, [graph.root(i) for i in graph.inputs], [graph.root(o) for o in graph.outputs]
    )
    notes = "".join(f"; {n}" for n in graph.notes)
    return ActivationMemory(
        peak,
        at,
        live,
        sum(graph.sizes[r] for r in roots),
        sum(graph.sizes[i] for i in graph.inputs),
        f"computed: tensor liveness over the {graph.source} graph in execution order{notes}",
    )
