"""TensorFlow Lite Micro, run on this host: the real TFLM interpreter and kernels of the `tflite-micro`
wheel (reference kernels, built with the DECODE operator). Loads a .tflite file, measures the arena it
needs, feeds float inputs (quantized to the file's int8 input) and returns float outputs.

The wheel has no arena getter: `print_allocations()` writes "Arena allocation total N bytes" to the
C-level stderr, which is read here by redirecting file descriptor 2. That total is not always enough to
run: for LeNet-300-100 an arena of exactly that size fails to allocate, and one a few hundred bytes
larger crashes the process instead of raising. So the arena a device must reserve is measured by bisection,
each candidate size loaded and invoked in a child process that may crash (`minimal_arena`), and the
sessions here run with a generous arena.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgeshrink.errors import ExportError, RuntimeLoadError
from edgeshrink.runtimes.litert import dequantize_output, describe_detail, quantize_input

INSTALL_HINT = "TFLite Micro support is an optional extra: pip install 'edgeshrink[tflm]'"
PROBE_ARENA_BYTES = 64 << 20  # enough for any model that fits a microcontroller; the real need is measured
ARENA_SEARCH_BYTES = 16  # bisection resolution of the minimal arena
_PROBE = """
import sys, numpy as np
from tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
print("ok")
"""
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_REASON = re.compile(r"failed to prepare|was not true|Didn't find|not supported|unsupported|Unsupported", re.I)


def require_tflm(what: str = "--format tflm") -> None:
    """ExportError naming the install command when the tflite-micro wheel is missing."""
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        raise ExportError(f"{what} needs tflite-micro: {INSTALL_HINT}")


def tflm_version() -> str:
    import tflite_micro

    return str(tflite_micro.__version__)


def _interpreter(data: bytes, arena: int):
    """An interpreter over `data`. TFLM reads the flatbuffer in place and the wheel's wrapper keeps no
    reference to it: the caller must keep `data` alive as long as the interpreter (a freed buffer crashes)."""
    from tflite_micro import runtime

    try:
        return runtime.Interpreter.from_bytes(data, arena_size=int(arena))
    except (RuntimeError, ValueError) as exc:
        raise RuntimeLoadError(f"TFLite Micro cannot load the model: {str(exc).splitlines()[0][:200]}") from None


@contextlib.contextmanager
def _captured_fd2():
    """Route the C-level stderr (TFLM's MicroPrintf) into a temporary file; yields a reader of it."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def measure_arena(data: bytes) -> int:
    """Bytes of tensor arena TFLM's recording allocator reports for this file (activations, decoded
    weights, bookkeeping). Not enough to run it: `minimal_arena` measures that."""
    require_tflm("running a TFLite Micro file")
    data = bytes(data)  # held until the interpreter is gone
    with _captured_fd2() as text:
        interpreter = _interpreter(data, PROBE_ARENA_BYTES)
        interpreter.print_allocations()
        del interpreter
        found = _TOTAL.search(text())
    if not found:
        raise RuntimeLoadError("TFLite Micro did not report its arena allocation (unexpected tflite-micro build)")
    return int(found.group(1))


def _runs_with(path: Path, arena: int) -> bool:
    done = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(arena)], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "ok"


def minimal_arena(data: bytes, reported: int | None = None) -> int:
    """The smallest arena (to ARENA_SEARCH_BYTES) in which the file loads and runs, found by bisection from
    the allocator's reported total (`reported`, measured here when not given), every candidate tried in a
    child process."""
    low = measure_arena(data) if reported is None else reported  # often not enough (module docstring)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        path.write_bytes(bytes(data))
        if _runs_with(path, low):  # the allocator's total is a lower bound: it may be enough
            return low
        step = ARENA_SEARCH_BYTES  # the need is usually a few alignment units above the total: search up
        high = low + step
        while not _runs_with(path, high):
            low, step = high, step * 4
            high = low + step
            if high > PROBE_ARENA_BYTES:
                raise RuntimeLoadError("TFLite Micro does not run this file in any arena up to 64 MB")
        while high - low > ARENA_SEARCH_BYTES:
            mid = (low + high) // 2
            low, high = (low, mid) if _runs_with(path, mid) else (mid, high)
    return high


class TFLMSession:
    """A TFLM interpreter (with an arena far larger than any file needs: TFLM crashes rather than fail on
    one slightly too small); runs float batches one example at a time."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)  # TFLM reads the model in place: it lives as long as the session
        with _captured_fd2() as printed:  # TFLM prints allocator chatter, and why an op fails, to fd 2
            try:
                self.interpreter = _interpreter(self.data, PROBE_ARENA_BYTES)
            except RuntimeLoadError as exc:
                reasons = [line.strip() for line in printed().splitlines() if _REASON.search(line)]
                raise RuntimeLoadError(f"{exc}: {'; '.join(reasons[:3])}" if reasons else str(exc)) from None
        # in LiteRT's form (dtype, shape, (scale, zero point)), so its quantize / dequantize / describe apply
        self.input = _litert_detail(self.interpreter.get_input_details(0))
        self.output = _litert_detail(self.interpreter.get_output_details(0))
        self.shape = tuple(int(d) for d in self.input["shape"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """A float input batch as the file takes it (int8 for an integer file), in the file's shape."""
        return quantize_input(x.reshape(self.shape), self.input)

    def io(self) -> dict:
        return {"input": describe_detail(self.input), "output": describe_detail(self.output)}

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """The file's own output (int8 for an integer file) for one already-quantized example."""
        self.interpreter.set_input(np.ascontiguousarray(x), 0)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_output(0))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """Float outputs for a float batch."""
        if self.shape[0] != 1:
            raise ExportError(f"the TFLite Micro file takes batches of {self.shape[0]}; edgeshrink writes batch 1")
        return np.concatenate([dequantize_output(self.run_raw(self.quantize(x)), self.output) for x in inputs])


def _litert_detail(d: dict) -> dict:
    q = d["quantization_parameters"]
    scales, zero_points = np.atleast_1d(q["scales"]), np.atleast_1d(q["zero_points"])
    quantization = (float(scales[0]), int(zero_points[0])) if scales.size else (0.0, 0)
    return {"shape": d["shape"], "dtype": d["dtype"], "quantization": quantization}
