"""How long does an ONNX export take with the exporter's ATen -> ONNX table built once per process
(exporters/onnx_registry.py) against torch's own build on every call? And is the file the same?

    python benchmarks/onnx_export_time.py --repeats 7 --out runs/onnx-export-time.json

Each zoo model (random weights; float, and int8 PTQ with minmax ranges on one random batch) is exported with
`to_onnx` both ways, alternating, after one warm-up export of each (imports, torch's first traces; the
exporter names a GRU's tensors differently in a model's first export), with garbage collected before each:
the median seconds of each way, their ratio, and whether every timed export wrote the same bytes. Run it
alone: it is a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from edgeshrink.environment import cpu_model
from edgeshrink.exporters import onnx_build
from edgeshrink.exporters.onnx_registry import torchlib_registry_once

sys.path.insert(0, str(Path(__file__).resolve().parent))
from float_twin import MODELS, random_int8  # noqa: E402  (the same zoo models, random weights, minmax PTQ)

WAYS = {"once per process": torchlib_registry_once, "every call (torch)": contextlib.nullcontext}


def _export(model: torch.nn.Module, x: torch.Tensor, way: str) -> tuple[float, bytes]:
    onnx_build.torchlib_registry_once = WAYS[way]
    try:
        gc.collect()
        start = time.perf_counter()
        graph, _ = onnx_build.to_onnx(model, x[:2])
        return time.perf_counter() - start, graph.SerializeToString()
    finally:
        onnx_build.torchlib_registry_once = torchlib_registry_once


def compare(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Median export seconds each way, alternating, and whether the files are identical."""
    seconds: dict[str, list[float]] = {w: [] for w in WAYS}
    for way in WAYS:
        _export(model, x, way)  # warm-up
    files = set()
    for i in range(repeats):
        for way in list(WAYS)[:: 1 if i % 2 == 0 else -1]:
            took, data = _export(model, x, way)
            seconds[way].append(took)
            files.add(data)
    once, every = (statistics.median(seconds[w]) for w in WAYS)
    return {
        "median_s": dict(zip(WAYS, (once, every), strict=True)),
        "ratio": once / every,
        "same_bytes": len(files) == 1,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.models.split(","):
        x, model, quantized = random_int8(name, batch=16)
        for precision, m in (("fp32", model), ("int8", quantized)):
            row = {"model": name, "precision": precision} | compare(m, x, args.repeats)
            rows.append(row)
            print(f"{name} {precision}: {row['median_s']['once per process']:.2f} s against "
                  f"{row['median_s']['every call (torch)']:.2f} s ({row['ratio']:.2f}x), "
                  f"same file: {row['same_bytes']}", flush=True)  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        env = {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__}
        args.out.write_text(json.dumps({"environment": env, "repeats": args.repeats, "results": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
