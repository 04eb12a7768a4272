"""The runtimes `bench` compares, each as a loaded file: how to run a batch, one timed inference, and the peak
memory it needs (measured where the runtime reports it, estimated and labelled otherwise).

A model (checkpoint, run folder, container) is exported for each runtime with its exporter, verified there
as every export is, into the bench folder; an exported file is run by the runtime that runs its format.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeshrink.errors import ConfigError

# runtime -> (export format, the module that must be importable, what it is)
RUNTIMES = {
    "onnxruntime": ("onnx", "onnxruntime", "ONNX Runtime (CPU)"),
    "litert": ("tflite", "ai_edge_litert", "LiteRT (XNNPACK)"),
    "tflm": ("tflm", "tflite_micro", "TensorFlow Lite Micro (reference kernels on this host)"),
    "executorch": ("pte", "executorch", "ExecuTorch (XNNPACK)"),
}
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "tflm": ".tflm.tflite", "pte": ".pte"}


@dataclass
class Loaded:
    """A file loaded in a runtime."""

    runtime: str
    file: Path
    bytes: int
    precision: str
    run: Callable[[np.ndarray], np.ndarray]  # float batch -> float outputs
    call: Callable[[], object]  # one inference at batch 1 (the timed unit)
    peak_bytes: int | None
    peak_source: str


def available(name: str) -> bool:
    return importlib.util.find_spec(RUNTIMES[name][1]) is not None


def parse_runtimes(text: str | None) -> list[str]:
    """The --runtimes list (default: every runtime installed here); an unknown name is refused."""
    names = [n.strip() for n in text.split(",") if n.strip()] if text else [n for n in RUNTIMES if available(n)]
    unknown = [n for n in names if n not in RUNTIMES]
    if unknown or not names:
        raise ConfigError(f"unknown runtime {unknown[0] if unknown else text!r}: choose from {', '.join(RUNTIMES)}")
    return names


def runtime_for_file(path: Path) -> str:
    """The runtime that runs an exported file, from its name; a TFLite Micro file by its DECODE ops or name."""
    name = path.name.lower()
    if name.endswith(".onnx"):
        return "onnxruntime"
    if name.endswith(".pte"):
        return "executorch"
    if name.endswith(".tflite"):
        from edgeshrink.measure.tflite_graph import DECODE_OP, from_tflite

        decodes = any(op.target == DECODE_OP for op in from_tflite(path).ops)
        return "tflm" if decodes or name.endswith(".tflm.tflite") else "litert"
    raise ConfigError(f"{path}: bench runs .onnx, .tflite and .pte files, checkpoints, containers and run folders")


def load(runtime: str, path: Path, precision: str, example: np.ndarray, threads: int, peak) -> Loaded:
    """`path` loaded in `runtime`; `peak` is the file's ActivationMemory from its costs (measured for a file
    with DECODE ops, else computed), used as it is except for a TFLite Micro file whose arena it did not measure."""
    data = path.read_bytes()
    size = len(data)
    measured = peak.source.startswith("measured")
    source = peak.source if measured else "estimated: computed tensor liveness of the model's graph"
    if runtime == "onnxruntime":
        from edgeshrink.runtimes.onnxruntime import make_session, run_session, session_call

        session = make_session(data, threads)
        run, call = (lambda x: run_session(session, x)), session_call(session, example[:1])
    elif runtime == "litert":
        from edgeshrink.runtimes.litert import interpreter_call, make_interpreter, run_interpreter

        interpreter = make_interpreter(data, threads)
        run, call = (lambda x: run_interpreter(interpreter, x)), interpreter_call(interpreter, example[:1])
    elif runtime == "executorch":
        from edgeshrink.runtimes.executorch import ExecuTorchSession

        session = ExecuTorchSession(data, threads)
        run, call = session.run, session.call(example)
    else:
        from edgeshrink.runtimes.tflm import TFLMSession, minimal_arena

        session = TFLMSession(data)
        q = session.quantize(example[:1])
        arena = peak.peak_bytes
        if not measured:  # measure_file measures the arena of DECODE files only
            arena = minimal_arena(data)
            source = "measured: the smallest tensor arena TensorFlow Lite Micro loads and runs the file in"
        return Loaded(runtime, path, size, precision, session.run, lambda: session.run_raw(q), arena, source)
    return Loaded(runtime, path, size, precision, run, call, peak.peak_bytes, source)
