"""LiteRT (TFLite) interpreter: load a .tflite file, feed it float inputs (quantizing them when the file
has int8 inputs), read float outputs, time it.

The TFLite support is an optional extra (`pip install 'edgeshrink[tflite]'`); `require_litert` turns a
missing package into a one-line error that says how to install it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeshrink.errors import ExportError, RuntimeLoadError

INSTALL_HINT = "TFLite support is an optional extra: pip install 'edgeshrink[tflite]' (or make test, which installs it)"


def require_litert(what: str = "TFLite export") -> None:
    """Raise ExportError naming the install command when litert-torch / ai-edge-litert are missing."""
    import importlib.util

    missing = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"{what} needs {', '.join(missing)}: {INSTALL_HINT}")


@contextlib.contextmanager
def quiet():
    """litert-torch, the MLIR converter and the interpreter print progress and absl logs to the process's
    stdout and stderr: keep the user's terminal clean (errors still surface as exceptions)."""
    loggers = [logging.getLogger(n) for n in ("absl", "litert_torch", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    stderr_fd = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 2)  # the C++ converter writes to fd 2 directly
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    yield
            finally:
                os.dup2(stderr_fd, 2)
    finally:
        os.close(stderr_fd)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def make_interpreter(model: str | Path | bytes, threads: int = 2):
    """A LiteRT interpreter with tensors allocated, on `threads` CPU threads (XNNPACK delegate, the default)."""
    require_litert("running a .tflite file")
    from ai_edge_litert.interpreter import Interpreter

    try:
        with quiet():
            if isinstance(model, bytes | bytearray):
                interpreter = Interpreter(model_content=bytes(model), num_threads=threads)
            else:
                interpreter = Interpreter(model_path=str(model), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0]
        hint = next((f"; {fix}" for symptom, fix in LOAD_FAILURES.items() if symptom in first), "")
        raise RuntimeLoadError(f"LiteRT cannot load the model: {first[:200]}{hint}") from None
    return interpreter


# What a LiteRT load error means for the model, and what to do (the interpreter's own words are kept first).
LOAD_FAILURES = {
    "(SOFTMAX) failed to prepare": (
        "LiteRT's int8 softmax takes only outputs on a 1/256 grid (zero point -128), and this model's softmax "
        "output is on another grid (edgeshrink's quantize stage puts it there; a model quantized elsewhere or by "
        "an earlier edgeshrink may not be): quantize it again, or export it to ONNX"
    ),
    "(FULLY_CONNECTED) failed to prepare": (
        "litert-torch wrote a matrix product whose input does not fit its weights (it does so for some scaled "
        "batched matmuls of transposed tensors, with or without its layout pass): write that product with "
        "torch.einsum, which converts, or export to ONNX"
    ),
}


def io_quantization(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of an integer input or output tensor, None for a float one."""
    if np.issubdtype(detail["dtype"], np.floating):
        return None
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> what the tensor takes: q = clip(round(x / scale) + zero_point) for an int8 input."""
    q = io_quantization(detail)
    if q is None or not np.issubdtype(x.dtype, np.floating):  # integer inputs (token ids) go in as they are
        return np.ascontiguousarray(x, dtype=detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / q[0]) + q[1], info.min, info.max).astype(detail["dtype"])


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """An integer output back to float: (q - zero_point) * scale."""
    q = io_quantization(detail)
    if q is None:
        return y.astype(np.float32)
    return (y.astype(np.float32) - q[1]) * q[0]


def run_interpreter(interpreter, inputs: np.ndarray) -> np.ndarray:
    """Float outputs for a batch of float inputs, one example at a time (the file's batch is 1)."""
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch = int(inp["shape"][0]) or 1
    results = []
    for start in range(0, inputs.shape[0], batch):
        chunk = inputs[start : start + batch]
        if chunk.shape[0] != batch:
            raise ExportError(f"the .tflite file takes batches of {batch}; got {chunk.shape[0]} examples at the end")
        interpreter.set_tensor(inp["index"], quantize_input(chunk, inp))
        interpreter.invoke()
        results.append(dequantize_output(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(results)


def interpreter_call(interpreter, example: np.ndarray) -> Callable[[], object]:
    """A zero-argument call that runs the interpreter on `example` (already set once), for timing."""
    inp = interpreter.get_input_details()[0]
    feed = quantize_input(example, inp)

    def call() -> None:
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()

    return call


def litert_version() -> str:
    from importlib.metadata import version

    return version("ai-edge-litert")


def describe_detail(d: dict) -> dict:
    """One input or output tensor's detail: shape, type, and (scale, zero point) when integer."""
    q = io_quantization(d)
    out = {"shape": [int(v) for v in d["shape"]], "dtype": str(d["dtype"].__name__)}
    if q is not None:
        out["scale"], out["zero_point"] = q
    return out


def io_details(interpreter) -> dict:
    """Input and output of a loaded .tflite file: shape, type, and (scale, zero point) when integer."""
    return {
        "input": describe_detail(interpreter.get_input_details()[0]),
        "output": describe_detail(interpreter.get_output_details()[0]),
    }
