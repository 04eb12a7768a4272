"""TFLite benchmark: fp32, dynamic-range int8 and full int8 .tflite files beside the ONNX files of the
same models, verified in LiteRT against PyTorch and timed on this machine.

    python benchmarks/tflite.py --data-dir ../shared/data --out results.json

For LeNet-5 (MNIST) and ResNet-8 at 4x width (Fashion-MNIST), from the cached baselines that
benchmarks/quantization.py trains: file bytes; accuracy of each file on the whole test split; max
absolute output difference and top-1 agreement against the PyTorch model it came from (for int8, the
fake-quantized PyTorch int8 model); latency at batch 1 with 2 threads (median and p90 of --runs runs
after warm-up, every file timed in one process, interleaved run by run): LiteRT (XNNPACK) for the
.tflite files, ONNX Runtime for the .onnx files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edgeshrink
from edgeshrink.hardware import int8_weights_saturate
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize
from edgeshrink.runtimes.litert import interpreter_call, make_interpreter, run_interpreter
from edgeshrink.runtimes.onnxruntime import make_session, run_session, session_call
from edgeshrink.runtimes.timing import time_calls_interleaved
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, add_run_options, baseline, run_models, task_data_dir  # noqa: E402


def _outputs(model, inputs: torch.Tensor, batch: int = 500) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(x).numpy() for x in inputs.split(batch)])


def _compare(got: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "accuracy": 100.0 * float((got.argmax(1) == labels).mean()),
        "max_abs_diff": float(np.abs(got - reference).max()),
        "top1_agreement": 100.0 * float((got.argmax(1) == reference.argmax(1)).mean()),
    }


def run_model(name: str, args, progress: Progress) -> dict:
    task = load_task(MODEL_TASKS[name])
    data = task.data(task_data_dir(args.data_dir, task))
    model, _, cached = baseline(task.name, data, args.cache_dir, args.seed, progress)
    model.eval()
    out_dir = args.runs_dir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    test = data.test.inputs if args.test_subset is None else data.test.inputs[: args.test_subset]
    labels = (data.test.labels if args.test_subset is None else data.test.labels[: args.test_subset]).numpy()
    calibration = [(x, None) for x in data.train.inputs[: args.calibration_images].split(64)]
    example = test[:1]

    progress.line(f"[{name}] int8 post-training quantization ({args.calibration_images} calibration images)")
    # TFLite's int8 kernels accumulate in 32 bits: full-range weights. ONNX Runtime on x86 without VNNI
    # needs 7-bit weights (see docs/design.md), so there its int8 file gets its own calibrated model.
    int8_model, _ = post_training_quantize(model, calibration, settings=PTQSettings(reduced_range=False))
    onnx_int8_model = int8_model
    if int8_weights_saturate():
        onnx_int8_model, _ = post_training_quantize(model, calibration, settings=PTQSettings(reduced_range=True))
    references = {"fp32": _outputs(model, test), "int8": _outputs(int8_model, test)}
    computed = {id(model): references["fp32"], id(int8_model): references["int8"]}  # not run twice
    rows: dict[str, dict] = {}
    files: dict[str, Path] = {}
    for variant, source, mode in (
        ("tflite fp32", model, "none"),
        ("tflite dynamic int8", model, "dynamic"),
        ("tflite int8", int8_model, "int8"),
    ):
        progress.line(f"[{name}] {variant}: convert and verify in LiteRT on {len(test):,} test images")
        started = time.perf_counter()
        path = out_dir / (variant.replace(" ", "-") + ".tflite")
        result = edgeshrink.export_tflite(source, path, example, quantize=mode, verify=False)
        got = run_interpreter(make_interpreter(path, args.threads), test.numpy())
        reference = references["int8" if mode == "int8" else "fp32"]
        rows[variant] = {
            "bytes": result.bytes,
            **_compare(got, reference, labels),
            "reference": "the PyTorch int8 (fake-quantized) model" if mode == "int8" else "the fp32 PyTorch model",
            "io": result.io,
            "seconds": round(time.perf_counter() - started, 1),
        }
        files[variant] = path
    rows["tflite int8"]["pytorch_int8_accuracy"] = 100.0 * float((references["int8"].argmax(1) == labels).mean())
    for variant, source, activation in (("onnx fp32", model, None), ("onnx int8", onnx_int8_model, "uint8")):
        progress.line(f"[{name}] {variant}")
        path = out_dir / (variant.replace(" ", "-") + ".onnx")
        kwargs = {"activation_type": activation} if activation else {}
        result = edgeshrink.export(source, path, example, verify=False, **kwargs)
        session = make_session(path, args.threads)
        got = np.concatenate([run_session(session, x.numpy()) for x in test.split(500)])
        reference = computed.get(id(source))
        rows[variant] = {
            "bytes": result.bytes,
            **_compare(got, _outputs(source, test) if reference is None else reference, labels),
            "reference": "the PyTorch model it came from",
        }
        files[variant] = path

    progress.line(f"[{name}] timing {len(files)} files at batch 1, {args.threads} threads, {args.runs} runs each")
    x = example.numpy()
    calls = {}
    for variant, path in files.items():
        if path.suffix == ".tflite":
            calls[variant] = interpreter_call(make_interpreter(path, args.threads), x)
        else:
            calls[variant] = session_call(make_session(path, args.threads), x)
    timings = time_calls_interleaved(calls, 1, runs=args.runs, warmup=args.warmup, threads=args.threads)
    for variant, timing in timings.items():
        rows[variant]["latency_batch1"] = timing.to_dict()
        base = "tflite fp32" if variant.startswith("tflite") else "onnx fp32"
        rows[variant]["latency_ratio_to_fp32"] = timing.median_ms / timings[base].median_ms
    return {
        "model": name,
        "task": task.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "baseline_cached": cached,
        "test_images": len(test),
        "variants": rows,
    }


def markdown(entries: list[dict]) -> str:
    lines = [
        "| model | file | bytes | accuracy | max abs diff | top-1 agreement (reference) | batch 1 median / p90 ms "
        "(x fp32 of the same runtime) |",
        "| --- " * 7 + "|",
    ]
    for e in entries:
        for variant, r in e["variants"].items():
            t = r["latency_batch1"]
            ref = "int8 PyTorch" if "int8 (fake" in r["reference"] else "PyTorch"
            lines.append(
                f"| {e['model']} | {variant} | {r['bytes']:,} | {r['accuracy']:.2f}% | {r['max_abs_diff']:.3g} | "
                f"{r['top1_agreement']:.2f}% ({ref}) | {t['median_ms']:.3f} / {t['p90_ms']:.3f} "
                f"({r['latency_ratio_to_fp32']:.2f}x) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default="lenet5,resnet8x4")
    parser.add_argument("--calibration-images", type=int, default=2048)
    parser.add_argument("--test-subset", type=int, default=None, help="smoke tests only: fewer test images")
    add_run_options(parser, "runs/tflite-benchmark")
    args = parser.parse_args(argv)
    return run_models("tflite", args, run_model, markdown)


if __name__ == "__main__":
    sys.exit(main())
