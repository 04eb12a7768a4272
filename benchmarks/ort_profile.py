"""Where the time goes in ONNX Runtime: per operator type, the kernel time of each .onnx file and how many
of that operator its optimized graph holds.

    python benchmarks/ort_profile.py --batch 1 runs/quantization-benchmark/resnet8x4/int8-ptq.onnx \
        runs/quantization-benchmark/resnet8x4/nncf-onnx.onnx

Each file gets its own session (2 threads, no spinning, ORT_ENABLE_ALL), --runs profiled runs on one
random batch, and the kernel times are averaged per run. Run it alone: it is a measurement.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort


def profile(path: Path, batch: int, runs: int, threads: int) -> tuple[dict[str, float], collections.Counter]:
    """(operator type -> milliseconds per run, operator counts of the optimized graph)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = session.get_inputs()[0]
        shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(runs):
            session.run(None, {spec.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1000 / runs
    return dict(per_op), ops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8, help="operator types shown per file")
    args = parser.parse_args(argv)
    for path in args.files:
        per_op, ops = profile(path, args.batch, args.runs, args.threads)
        print(f"{path}: {sum(per_op.values()):.3f} ms per run (kernel time), batch {args.batch}")
        for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {op:<24} {ms:.3f} ms  x{ops.get(op, 0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
