"""Is one .onnx file really faster than another? Time them interleaved, several times over, in one process.

    python benchmarks/ort_retime.py --batch 1 --runs 400 --repeats 3 \
        runs/quantization-benchmark/lenet5/int8-ptq.onnx runs/quantization-benchmark/lenet5/brevitas-ptq.onnx

Every file gets its own session (2 threads, no spinning, as the export and the benchmarks time), and
each repeat builds new sessions (in a random order) and times all of them interleaved on one random batch
(edgeshrink's own timer): the median of each repeat, and the ratio to the first file; the last line gives
each file's median over the repeats. When the order of the files changes between repeats,
their difference is below what this machine can measure. Run it alone: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from edgeshrink.environment import cpu_model
from edgeshrink.runtimes.onnxruntime import make_session, time_in_new_sessions


def retime(paths: list[Path], batch: int, runs: int, repeats: int, threads: int) -> list[dict[str, float]]:
    """Median milliseconds of each file in each repeat, every repeat with new sessions (time_in_new_sessions)."""
    spec = make_session(paths[0].read_bytes(), threads).get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    graphs = {p.as_posix(): p.read_bytes() for p in paths}
    return time_in_new_sessions(graphs, x, runs=runs, rounds=repeats, warmup=10, threads=threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the timings as JSON")
    args = parser.parse_args(argv)
    rows = retime(args.files, args.batch, args.runs, args.repeats, args.threads)
    first = args.files[0].as_posix()
    print(f"{cpu_model() or platform.processor()}: batch {args.batch}, {args.runs} runs, median ms (x the first file)")
    for i, row in enumerate(rows, 1):
        print(f"repeat {i}: " + ", ".join(f"{Path(k).name} {v:.4f} ({v / row[first]:.2f}x)" for k, v in row.items()))
    medians = {k: float(np.median([row[k] for row in rows])) for k in rows[0]}
    print("median: " + ", ".join(f"{Path(k).name} {v:.4f} ({v / medians[first]:.3f}x)" for k, v in medians.items()))
    if args.out:
        args.out.write_text(json.dumps({"batch": args.batch, "runs": args.runs, "repeats": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
