"""ONNX Runtime sessions: load a model from bytes or a file, run it, time it.

Two thread-pool settings (`pool`), both fair to models timed interleaved in one process:
- "session" (default): each session owns its threads and never spins them idle
  (`session.intra_op.allow_spinning = 0`); on a 2-core machine a spinning session would steal time
  from the next one, so interleaved timings would be noise. Waking the pool's threads for every
  parallel operator costs time that weighs on small, fast models (ResNet-8x4, 13 operators: 0.88 ms
  with own pools, 0.77 ms shared, in benchmarks/structured.py).
- "shared": every session uses one process-wide pool with ONNX Runtime's default spinning, what an
  app that runs one model sees; idle sessions hold no threads, so interleaving stays fair. ONNX
  Runtime fixes this pool's size once per process, and once it exists no session may own a pool.
See docs/design.md.

Graphs with float16 tensors are optimized at most at ORT_ENABLE_EXTENDED: ONNX Runtime 1.32 crashes
the process (segmentation fault, no exception to catch) creating an ORT_ENABLE_ALL session of an fp16
transformer encoder (tests/test_layer_families.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeshrink.errors import ConfigError, RuntimeLoadError
from edgeshrink.runtimes.timing import Timing, time_calls_interleaved

Level = str  # "all" | "extended" | "basic" | "disable"
Pool = str  # "session" | "shared"
_shared_pool_threads: int | None = None


def has_float16(model: str | Path | bytes) -> bool:
    """Whether an ONNX model stores float16 initializers (read without external data)."""
    import onnx

    try:
        proto = (
            onnx.load_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(str(model), load_external_data=False)
        )
    except Exception:  # unreadable: let ONNX Runtime say why
        return False
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)


def make_session(model: str | Path | bytes, threads: int = 2, level: Level = "all", pool: Pool = "session"):
    """An ONNX Runtime CPU session with a fixed thread count: its own pool without spinning, or the
    process-wide spinning pool (`pool="shared"`, see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if pool == "shared":
        share_thread_pool(threads)
        options.use_per_session_threads = False
    elif pool == "session":
        if _shared_pool_threads is not None:
            raise ConfigError(
                "ONNX Runtime allows no session with its own thread pool once a process uses the shared pool: "
                "create own-pool sessions first, or time the shared pool in another process"
            )
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    else:
        raise ConfigError(f"pool {pool!r} is not known: use 'session' or 'shared'")
    options.log_severity_level = 3
    if level == "all" and has_float16(model):
        level = "extended"  # see the module docstring: ORT_ENABLE_ALL crashes on some fp16 graphs
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / RuntimeException types
        what = "the model" if isinstance(model, bytes) else str(model)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeLoadError(f"ONNX Runtime {ort.__version__} cannot load {what}: {first[:300]}") from None


def share_thread_pool(threads: int) -> None:
    """Size the process-wide pool that `pool="shared"` sessions use (ONNX Runtime allows it once)."""
    global _shared_pool_threads
    if _shared_pool_threads == threads:
        return
    if _shared_pool_threads is not None:
        raise ConfigError(
            f"this process's shared ONNX Runtime thread pool has {_shared_pool_threads} threads and ONNX Runtime "
            f"sizes it once per process: time {threads} threads in another process, or with pool='session'"
        )
    from onnxruntime.capi import _pybind_state

    _pybind_state.set_global_thread_pool_sizes(threads, 1)
    _shared_pool_threads = threads


ONNX_INPUT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,  # raw image bytes, scaled inside the model
    "tensor(bool)": np.bool_,
}


def feed(session, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The session's input, in the type the file declares (float32 for float models, int64 for token ids)."""
    first = session.get_inputs()[0]
    return {first.name: np.ascontiguousarray(inputs, dtype=ONNX_INPUT_TYPES.get(first.type, np.float32))}


def run_session(session, inputs: np.ndarray) -> np.ndarray:
    return session.run(None, feed(session, inputs))[0]


def session_call(session, inputs: np.ndarray) -> Callable[[], object]:
    """A zero-argument call that runs an ONNX Runtime session on `inputs` (for timing)."""
    prepared = feed(session, inputs)
    return lambda: session.run(None, prepared)


def time_interleaved(
    sessions: dict[str, object], inputs: np.ndarray, runs: int = 50, warmup: int = 5, threads: int = 2
) -> dict[str, Timing]:
    """Time several ONNX Runtime sessions on the same input, interleaved (see time_calls_interleaved)."""
    calls = {k: session_call(s, inputs) for k, s in sessions.items()}
    return time_calls_interleaved(calls, inputs.shape[0], runs, warmup, threads)


def time_in_new_sessions(
    graphs: dict[str, bytes], inputs: np.ndarray, runs: int, rounds: int, warmup: int = 5, threads: int = 2
) -> list[dict[str, float]]:
    """Median milliseconds of every graph in each of `rounds` rounds; each round builds new sessions, in a
    new random order, and times them interleaved. One session keeps its own speed for its life (three
    sessions of one file, timed together: one 2-3% faster than the others in four of four repeats), so
    sessions kept across rounds would repeat that luck instead of averaging it out."""
    order = np.random.default_rng(0)
    out = []
    for _ in range(rounds):
        sessions = {str(k): make_session(graphs[str(k)], threads) for k in order.permutation(list(graphs))}
        timed = time_interleaved(sessions, inputs, runs=runs, warmup=warmup, threads=threads)
        out.append({k: timed[k].median_ms for k in graphs})
    return out


def onnxruntime_version() -> str:
    import onnxruntime as ort

    return ort.__version__
