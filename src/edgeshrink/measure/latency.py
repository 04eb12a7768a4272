"""Measured latency on this machine: PyTorch eager, ONNX Runtime and LiteRT, median and p90 over repeated
runs after warm-up, with the thread count and batch size stated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeshrink.runtimes.timing import Timing, time_calls, timing_from


def measure_torch(model: nn.Module, example: torch.Tensor, threads: int = 1, runs: int | None = None) -> Timing:
    """PyTorch eager latency of `model(example)` under `torch.no_grad()` with `threads` intra-op threads."""
    from edgeshrink.weights import baked_copy

    model = baked_copy(model).eval()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            samples = time_calls(lambda: model(example), runs=runs)
    finally:
        torch.set_num_threads(before)
    return timing_from(samples, int(example.shape[0]), threads, "PyTorch eager", torch.__version__)


def measure_onnx(model: str | Path | bytes, example: np.ndarray, threads: int = 1, runs: int | None = None) -> Timing:
    """ONNX Runtime latency of one run on `example` (its own non-spinning thread pool)."""
    from edgeshrink.runtimes.onnxruntime import make_session, onnxruntime_version, session_call

    session = make_session(model, threads)
    samples = time_calls(session_call(session, example), runs=runs)
    return timing_from(samples, int(example.shape[0]), threads, "ONNX Runtime (CPU)", onnxruntime_version())


def measure_tflite(model: str | Path | bytes, threads: int = 1, runs: int | None = None) -> Timing:
    """LiteRT interpreter latency of one invoke at the file's input shape (int8 inputs fed as int8)."""
    from edgeshrink.runtimes.litert import interpreter_call, litert_version, make_interpreter

    interpreter = make_interpreter(model, threads)
    detail = interpreter.get_input_details()[0]
    example = np.zeros([int(d) for d in detail["shape"]], dtype=np.float32)
    samples = time_calls(interpreter_call(interpreter, example), runs=runs)
    return timing_from(samples, int(example.shape[0]), threads, "LiteRT (CPU, XNNPACK)", litert_version())


def measure_tflm(model: str | Path | bytes, runs: int | None = None) -> Timing:
    """TFLite Micro interpreter latency on this host (reference kernels, one thread) of one invoke: a file
    with weights for TFLM's DECODE operator runs only there (LiteRT has no such operator)."""
    from edgeshrink.runtimes.tflm import TFLMSession, tflm_version

    session = TFLMSession(Path(model).read_bytes() if not isinstance(model, bytes) else model)
    example = np.zeros(session.shape, dtype=session.input["dtype"])
    samples = time_calls(lambda: session.run_raw(example), runs=runs)
    return timing_from(samples, session.shape[0], 1, "TensorFlow Lite Micro (host, reference kernels)", tflm_version())
