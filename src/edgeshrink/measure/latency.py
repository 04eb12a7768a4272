"""Measured latency on this machine: PyTorch eager and ONNX Runtime, median and p90 over repeated runs
after warm-up, with the thread count and batch size stated."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class Timing:
    """A measured latency and the conditions it was measured under."""

    runtime: str
    version: str
    median_ms: float
    p90_ms: float
    runs: int
    threads: int
    batch: int
    provenance: str = "measured on this machine"

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(
    fn: Callable[[], object], warmup: int = 5, runs: int | None = None, budget_s: float = 0.5
) -> list[float]:
    """Seconds per call of `fn`, after `warmup` calls; the run count fits `budget_s` (10..200) unless given."""
    for _ in range(max(warmup, 1)):
        fn()
    if runs is None:
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        runs = int(min(200, max(10, budget_s / once)))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _summary(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(statistics.median(ms)), float(np.percentile(ms, 90))


def measure_torch(model: nn.Module, example: torch.Tensor, threads: int = 1, runs: int | None = None) -> Timing:
    """PyTorch eager latency of `model(example)` under `torch.no_grad()` with `threads` intra-op threads."""
    from edgeshrink.measure.graph import plain_copy

    model = plain_copy(model)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            samples = time_calls(lambda: model(example), runs=runs)
    finally:
        torch.set_num_threads(before)
    median, p90 = _summary(samples)
    return Timing("PyTorch eager", torch.__version__, median, p90, len(samples), threads, int(example.shape[0]))


def ort_session(path: str | Path, threads: int = 1):
    """An ONNX Runtime CPU session with `threads` intra-op threads and no thread spinning (so sessions
    timed one after another in a process do not steal each other's cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def measure_onnx(path: str | Path, example: np.ndarray, threads: int = 1, runs: int | None = None) -> Timing:
    """ONNX Runtime latency of one run on `example` (fed to the first graph input)."""
    import onnxruntime as ort

    session = ort_session(path, threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(example)}
    samples = time_calls(lambda: session.run(None, feed), runs=runs)
    median, p90 = _summary(samples)
    return Timing("ONNX Runtime (CPU)", ort.__version__, median, p90, len(samples), threads, int(example.shape[0]))


def measure_tflite(path: str | Path, threads: int = 1, runs: int | None = None) -> Timing:
    """LiteRT interpreter latency of one invoke at the file's input shape (int8 inputs fed as int8)."""
    from edgeshrink.exporters.litert_runtime import interpreter_call, litert_version, make_interpreter

    interpreter = make_interpreter(path, threads)
    detail = interpreter.get_input_details()[0]
    example = np.zeros([int(d) for d in detail["shape"]], dtype=np.float32)
    samples = time_calls(interpreter_call(interpreter, example), runs=runs)
    median, p90 = _summary(samples)
    return Timing("LiteRT (CPU, XNNPACK)", litert_version(), median, p90, len(samples), threads, int(example.shape[0]))
