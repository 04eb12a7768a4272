"""The float twin taken from the QDQ graph against the one a second PyTorch export writes: export time,
outputs and ONNX Runtime time (the figures of docs/design.md on the ONNX exporter's kernel choice).

    python benchmarks/float_twin.py --out runs/float-twin.json

Each zoo model (random weights, int8 PTQ with minmax ranges on one random batch) is exported as QDQ, and its
float twin both ways: stripped from the QDQ graph (exporters/qdq_strip.py, stripped here at the QDQ graph's
own opset so that the transformer, which the exporter sends back to PyTorch for its Gelu, is compared too)
and exported from PyTorch at the float opset. Both twins are timed interleaved with new sessions each round
(the exporter's own timer) at batch 1 and 64. Run it alone: it is a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edgeshrink.environment import cpu_model
from edgeshrink.exporters.onnx_build import QDQ_OPSET, float_twin, to_onnx
from edgeshrink.exporters.qdq_strip import float_twin_from_qdq
from edgeshrink.models import create_model
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize
from edgeshrink.runtimes.onnxruntime import make_session, run_session, time_in_new_sessions

MODELS = {"mobilenetv3-tiny": (1, 8, 8), "resnet8": (3, 32, 32), "row-gru": (1, 8, 8), "row-transformer": (1, 8, 8)}
RUNS = {1: 300, 64: 30}


def _seconds(make):
    start = time.perf_counter()
    out = make()
    return out, time.perf_counter() - start


def random_int8(name: str, batch: int = 64) -> tuple[torch.Tensor, torch.nn.Module, torch.nn.Module]:
    """A random batch for a zoo model of MODELS, the model with random weights (seed 0), and its int8 PTQ
    (minmax ranges on that batch)."""
    torch.manual_seed(0)
    x = torch.randn(batch, *MODELS[name])
    model = create_model(name, input_shape=MODELS[name]).eval()
    quantized, _ = post_training_quantize(model, [(x, None)], 8, PTQSettings(calibration="minmax"))
    return x, model, quantized.eval()


def compare(name: str, rounds: int) -> dict:
    """One model's export times, largest output difference and time ratios (stripped / PyTorch twin)."""
    x, _, quantized = random_int8(name)
    (graph, _), qdq_s = _seconds(lambda: to_onnx(quantized, x[:1], "uint8"))
    stripped, strip_s = _seconds(lambda: float_twin_from_qdq(graph, QDQ_OPSET))
    exported, export_s = _seconds(lambda: float_twin(quantized, x[:1]))
    graphs = {"stripped": stripped.SerializeToString(), "exported": exported.SerializeToString()}
    outputs = [run_session(make_session(g, threads=1), x.numpy()) for g in graphs.values()]
    row = {"model": name, "qdq_export_s": qdq_s, "strip_s": strip_s, "pytorch_twin_s": export_s,
           "max_abs_diff": float(np.abs(outputs[0] - outputs[1]).max())}  # fmt: skip
    for batch, runs in RUNS.items():
        timed = time_in_new_sessions(graphs, x[:batch].numpy(), runs=runs, rounds=rounds)
        row[f"ratio_batch{batch}"] = float(np.median([r["stripped"] / r["exported"] for r in timed]))
        row[f"pytorch_twin_ms_batch{batch}"] = float(np.median([r["exported"] for r in timed]))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: " + ", ".join(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cpu = cpu_model() or platform.processor()
    print(f"{cpu}: median over {args.rounds} rounds of new sessions; ratio = stripped / PyTorch twin")
    print("| model | QDQ export | PyTorch twin | stripped | max diff | ratio b1 | ratio b64 |")
    rows = []
    for name in args.models.split(","):
        r = compare(name, args.rounds)
        rows.append(r)
        times = f"{r['qdq_export_s']:.2f} s | {r['pytorch_twin_s']:.2f} s | {r['strip_s']:.3f} s"
        print(f"| {name} | {times} | {r['max_abs_diff']:.1e} | {r['ratio_batch1']:.3f} | {r['ratio_batch64']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpu": cpu, "rounds": args.rounds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
