"""Where does the test suite's time go? A pytest plugin that times every ONNX export, every build of the
exporter's translation table and every LiteRT conversion, by test module.

    PYTHONPATH=benchmarks python -m pytest -n logical --maxprocesses 4 --dist loadscope -p suite_export_time

Each process (xdist workers included) appends one line per call to runs/suite-export-time/PID.tsv; the
controlling process prints the totals by kind and the ten largest (module, kind) rows at the end. A
measurement: run it alone, and delete the folder before a new run.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

FOLDER = Path("runs/suite-export-time")


def _timed(fn, label: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            module = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[0]
            with (FOLDER / f"{os.getpid()}.tsv").open("a") as f:
                f.write(f"{label}\t{time.perf_counter() - start:.4f}\t{module}\n")

    return wrapper


def pytest_configure(config) -> None:
    """Wrap torch.onnx.export, ONNXRegistry.from_torchlib's build and litert_torch.convert."""
    import torch.onnx
    from torch.onnx._internal.exporter import _registration

    FOLDER.mkdir(parents=True, exist_ok=True)
    torch.onnx.export = _timed(torch.onnx.export, "onnx export")
    build = _registration.ONNXRegistry.__dict__["from_torchlib"].__func__
    _registration.ONNXRegistry.from_torchlib = classmethod(_timed(build, "translation table"))
    try:
        import litert_torch
    except ImportError:
        return
    litert_torch.convert = _timed(litert_torch.convert, "litert conversion")


def pytest_terminal_summary(terminalreporter) -> None:
    """Totals by kind, and the largest (module, kind) rows, over every process's file."""
    if hasattr(terminalreporter.config, "workerinput"):
        return
    totals: dict[str, list[float]] = defaultdict(list)
    rows: dict[tuple[str, str], list[float]] = defaultdict(list)
    for path in FOLDER.glob("*.tsv"):
        for line in path.read_text().splitlines():
            kind, seconds, module = line.split("\t")
            totals[kind].append(float(seconds))
            rows[module, kind].append(float(seconds))
    write = terminalreporter.write_line
    write("export time by kind (calls, seconds of worker time, median seconds):")
    for kind, values in sorted(totals.items()):
        write(f"  {kind}: {len(values)} calls, {sum(values):.1f} s, median {statistics.median(values):.2f} s")
    for (module, kind), values in sorted(rows.items(), key=lambda kv: -sum(kv[1]))[:10]:
        write(f"  {sum(values):7.1f} s {len(values):4d} x {kind:18s} {module}")
