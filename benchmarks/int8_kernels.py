"""Why int8 is (not) faster here: ONNX Runtime per-node convolution times and thread-count ratios of an
fp32 and an int8 .onnx file of the same model.

    python benchmarks/int8_kernels.py runs/quantization-benchmark/resnet8x4/fp32.onnx \\
        runs/quantization-benchmark/resnet8x4/int8-ptq.onnx --out int8_kernels.json

(the files that benchmarks/quantization.py writes). For each file: the median kernel time of every
convolution node over --runs profiled runs at batch 1 (ORT's profiler; fp32 and int8 nodes are fused
and named differently, so they are listed per file with their sums), and the int8 / fp32 latency
ratio at batch 1 and 64 with 1 and 2 threads (interleaved, median of --runs runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgeshrink.runtimes.onnxruntime import make_session, time_interleaved


def conv_node_times(path: Path, x: np.ndarray, runs: int) -> list[dict]:
    """Median kernel time (ms) of each convolution node, from ONNX Runtime's profiler."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs + 1):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    samples: dict[str, list[float]] = defaultdict(list)
    shapes: dict[str, object] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and "Conv" in e["args"]["op_name"]:
            samples[e["name"]].append(e["dur"] / 1000)
            shapes[e["name"]] = e["args"].get("output_type_shape")
    return [
        {"node": n.removesuffix("_kernel_time"), "median_ms": float(np.median(v[1:])), "output": shapes[n]}
        for n, v in samples.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("fp32", type=Path)
    parser.add_argument("int8", type=Path)
    parser.add_argument("--out", type=Path, default=Path("int8_kernels.json"))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    for path in (args.fp32, args.int8):
        if not path.is_file():
            print(f"error: {path} does not exist; run benchmarks/quantization.py first", file=sys.stderr)
            return 2
    session = make_session(args.fp32)
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    rng = np.random.default_rng(0)
    result: dict = {"files": {"fp32": str(args.fp32), "int8": str(args.int8)}, "ratios": {}, "nodes": {}}
    for threads in (1, 2):
        sessions = {k: make_session(p, threads) for k, p in (("fp32", args.fp32), ("int8", args.int8))}
        for batch in (1, 64):
            x = rng.random((batch, *shape[1:]), dtype=np.float32)
            t = time_interleaved(sessions, x, runs=args.runs, warmup=3, threads=threads)
            ratio = t["int8"].median_ms / t["fp32"].median_ms
            result["ratios"][f"threads{threads}_batch{batch}"] = ratio
            print(f"{threads} thread(s), batch {batch}: int8 / fp32 = {ratio:.2f}x ({t['fp32'].median_ms:.2f} ms fp32)")
    x = rng.random((1, *shape[1:]), dtype=np.float32)
    for key, path in (("fp32", args.fp32), ("int8", args.int8)):
        result["nodes"][key] = conv_node_times(path, x, args.runs)
    for key, nodes in result["nodes"].items():
        total = sum(n["median_ms"] for n in nodes)
        result[f"{key}_conv_total_ms"] = total
        print(f"{key}: {len(nodes)} convolution nodes, {total:.2f} ms in total at batch 1, 2 threads")
        for n in nodes:
            print(f"  {n['node']:32s} {n['median_ms']:.3f} ms  {n['output']}")
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
