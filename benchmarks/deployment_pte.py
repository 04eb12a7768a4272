"""The phone and board rows of benchmarks/deployment.py: the 1.2M-parameter ResNet-8x4 on Fashion-MNIST as
ExecuTorch programs with the XNNPACK delegate, fp32 and int8 (the int8 recipe), and as an ncnn network (fp16
weights, the float model: ncnn's int8 tools are not in its wheels), each written through `edgeshrink.export`
(verified there): bytes, accuracy and top-1 agreement with its PyTorch model from the runtime on the 10,000
test images, and latency at batch 1 on 2 threads, all files timed alternately in one process (medians)."""

from __future__ import annotations

import time

import numpy as np
import torch

import edgeshrink
from edgeshrink.runtimes.executorch import ExecuTorchSession, executorch_version
from edgeshrink.runtimes.ncnn import NcnnSession, ncnn_version
from edgeshrink.runtimes.timing import time_calls_interleaved
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import evaluate

TASK = "fashion-resnet8x4"


FILES = {"fp32": "model.fp32.pte", "int8": "model.int8.pte", "ncnn-fp16": "model.ncnn.param"}


def quality(session, reference, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy of a runtime's session and of its PyTorch reference on the test split, and their agreement."""
    started = time.perf_counter()
    got = session.run(inputs.numpy())
    with torch.no_grad():
        ref = torch.cat([reference(x) for x in inputs.split(500)]).numpy()
    y = labels.numpy()
    return {
        "accuracy": 100.0 * float((got.argmax(1) == y).mean()),
        "torch_accuracy": 100.0 * float((ref.argmax(1) == y).mean()),
        "top1_agreement": 100.0 * float((got.argmax(1) == ref.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(got - ref).max()),
        "examples": int(len(y)),
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_pte(name: str, args, progress, data_dir, baseline) -> dict:
    """fp32 and int8 .pte of the task's baseline; `baseline` and `data_dir` are the benchmark's helpers."""
    task = load_task(TASK)
    data = task.data(data_dir(args.data_dir, task))
    model, _, _ = baseline(task.name, data, args.cache_dir, args.seed, progress)
    folder = args.runs_dir / name
    if not (args.reuse_runs and (folder / "model.eshrink").is_file()):
        edgeshrink.compress(
            model,
            "int8",
            out=folder,
            seed=args.seed,
            arch=task.arch,
            progress=progress.enabled,
            train_loader=data.train.loader(task.batch_size, shuffle=True, seed=args.seed),
            val_loader=data.test.loader(1000),
        )
    quantized = edgeshrink.load(folder).model
    verify = [data.test.inputs[:500]]
    files, sessions, rows = {}, {}, {}
    for key, source in (("fp32", model), ("int8", quantized), ("ncnn-fp16", model)):
        path = folder / FILES[key]
        fmt = "ncnn" if key.startswith("ncnn") else "pte"
        files[key] = edgeshrink.export(source, path, format=fmt, verify_data=verify, threads=args.threads)
        if fmt == "pte":
            sessions[key] = ExecuTorchSession(path.read_bytes(), args.threads)
        else:
            sessions[key] = NcnnSession(path.read_text(), path.with_suffix(".bin").read_bytes(), args.threads)
        rows[key] = quality(sessions[key], source.eval(), data.test.inputs, data.test.labels)
    example = data.test.inputs[:1].numpy()
    timings = time_calls_interleaved(
        {p: s.call(example) for p, s in sessions.items()}, 1, args.runs, args.warmup, args.threads
    )
    for precision, row in rows.items():
        row["bytes"] = files[precision].bytes
        row["latency_ms"] = {"median": timings[precision].median_ms, "p90": timings[precision].p90_ms}
        row["notes"] = files[precision].notes
    return {
        "model": name,
        "task": TASK,
        "kind": "executorch",
        "executorch": executorch_version(),
        "ncnn": ncnn_version(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "float_accuracy_torch": evaluate(model, data.test.loader(1000)),
        "threads": args.threads,
        "runs": args.runs,
        "fp32": rows["fp32"],
        "int8": rows["int8"],
        "ncnn-fp16": rows["ncnn-fp16"],
        "int8_vs_fp32_latency": timings["int8"].median_ms / timings["fp32"].median_ms,
        "int8_vs_fp32_bytes": rows["int8"]["bytes"] / rows["fp32"]["bytes"],
        "ncnn_vs_fp32_pte_latency": timings["ncnn-fp16"].median_ms / timings["fp32"].median_ms,
    }


def markdown_pte(entries: list[dict]) -> str:
    lines = [
        "| model | file (runtime) | bytes | accuracy (runtime / torch) | agreement with torch | batch-1 latency, "
        "median (p90) | latency / fp32 .pte |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        ratios = {"int8": e["int8_vs_fp32_latency"], "ncnn-fp16": e["ncnn_vs_fp32_pte_latency"]}
        for key, label in (
            ("fp32", "fp32 .pte (ExecuTorch)"),
            ("int8", "int8 .pte (ExecuTorch)"),
            ("ncnn-fp16", "fp16 .param/.bin (ncnn)"),
        ):
            r = e[key]
            ratio = f"{ratios[key]:.2f}x" if key in ratios else "1.00x"
            lines.append(
                f"| {e['model']} ({e['parameters']:,} parameters) | {label} | {r['bytes']:,} B | "
                f"{r['accuracy']:.2f}% / {r['torch_accuracy']:.2f}% | {r['top1_agreement']:.2f}% | "
                f"{r['latency_ms']['median']:.3f} ms ({r['latency_ms']['p90']:.3f}) | {ratio} |"
            )
    return "\n".join(lines)
