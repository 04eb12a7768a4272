"""Every built-in recipe on the architectures users bring: a transformer, a CRNN (Conv1d + GRU) and a
MobileNetV3-style net, on MNIST.

python benchmarks/architectures.py --data-dir ../shared/data --out architectures.json

Each baseline trains on the task's fixed subset of the training images (10,000); the recipes' accuracy
budgets are judged on 5,000 other training images (a validation split, never the test split); the
accuracy reported is from the model rebuilt from the file, on the 10,000 test images. Every result is
exported to ONNX and TFLite and verified in ONNX Runtime and LiteRT on 1,000 test images.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

import edgeshrink
from edgeshrink.recipes import list_recipes, load_recipe
from edgeshrink.tasks.data import Split
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from common import MODEL_TASKS, baseline, initial_weights, run_models, task_data_dir  # noqa: E402

TASKS = {name: MODEL_TASKS[name] for name in ("transformer", "gru", "mobilenetv3")}


def validation_split(train: Split, n: int, held: int) -> Split:
    """`held` training images the baseline never saw: the tail of the permutation whose head is the
    task's fixed training subset (`Split.subset(n, seed=0)`)."""
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))
    if n + held > len(order):
        raise edgeshrink.EdgeshrinkError(
            f"{n:,} training images for the baseline leave fewer than {held:,} for the validation split: "
            "lower --train-subset or --val-size"
        )
    idx = order[n:][-held:]
    return Split(train.inputs[idx], train.labels[idx])


def _export(result, path: Path, verify: list[torch.Tensor]) -> dict:
    started = time.perf_counter()
    try:
        exported = edgeshrink.export(result.artifact, path, verify_data=verify)
    except edgeshrink.EdgeshrinkError as exc:
        return {"verified": False, "refused": str(exc)}
    p = exported.parity
    return {
        "verified": True,
        "bytes": exported.bytes,
        "top1_agreement": p["top1_agreement"],
        "max_abs_diff": p["max_abs_diff"],
        "max_diff_steps": p.get("max_diff_steps"),  # integer files: in output quantization steps
        "seconds": time.perf_counter() - started,
    }


def run_recipe(name: str, recipe: str, model, task, data, val: Split, args, progress: Progress) -> dict:
    started = time.perf_counter()
    out = args.runs_dir / name / recipe
    rewinds = any(getattr(s, "rewind", None) is not None for s in load_recipe(recipe).stages)
    result = edgeshrink.compress(
        model,
        recipe,
        train_loader=task.train_loader(data, args.seed),
        val_loader=val.loader(1000),
        out=out,
        seed=args.seed,
        progress=not args.quiet,
        rewind_weights=initial_weights(task.name, args.seed) if rewinds else None,
    )
    loaded = edgeshrink.load(out, task.build_model())
    verify = [data.test.inputs[i : i + 250] for i in range(0, 1000, 250)]
    quantized = [r for s in result.report["stages"] if s["stage"] == "quantize" for r in s["layers"]]
    row = {
        "model": name,
        "recipe": recipe,
        "test_accuracy": evaluate(loaded.model, data.test.loader(1000)),
        "budget": result.report["budget"],
        "container_bytes": result.report["container"]["bytes"],
        "ratio": result.report["container"]["ratio"],
        "layers_quantized": sum(r["status"] == "quantized" for r in quantized),
        "layers_float": {r["name"]: r["reason"] for r in quantized if r["status"] == "float"},
        "notes": [n for s in result.report["stages"] for n in s["notes"]],
        "onnx": _export(result, out / "model.onnx", verify),
        "tflite": _export(result, out / "model.tflite", verify),
        "seconds": time.perf_counter() - started,
    }
    progress.line(f"{name} {recipe}: {row['test_accuracy']:.2f}% test, {row['container_bytes']:,} B")
    return row


def run_model(name: str, args, progress: Progress) -> dict:
    task = load_task(TASKS[name])
    if args.train_subset is not None:
        task = dataclasses.replace(task, train_subset=args.train_subset)
    data = task.data(task_data_dir(args.data_dir, task))
    model, seconds, cached = baseline(task.name, data, args.cache_dir, args.seed, progress, None, args.train_subset)
    model.eval()
    val = validation_split(data.train, task.train_subset or len(data.train.labels), args.val_size)
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()] or list(list_recipes())
    return {
        "model": name,
        "task": task.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "baseline_test_accuracy": evaluate(model, data.test.loader(1000)),
        "baseline_val_accuracy": evaluate(model, val.loader(1000)),
        "baseline_seconds": seconds,
        "baseline_cached": cached,
        "rows": [run_recipe(name, r, model, task, data, val, args, progress) for r in recipes],
    }


def _verdict(export: dict) -> str:
    if not export["verified"]:
        return "refused: " + export["refused"][:70]
    return f"{export['top1_agreement']:.1f}%"


def markdown(entries: list[dict]) -> str:
    lines = [
        "| model | recipe | test accuracy | budget (validation) | container | int8 layers / float "
        "| ONNX top-1 | TFLite top-1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        lines.append(f"| {e['model']} ({e['parameters']:,} params) | baseline | {e['baseline_test_accuracy']:.2f}% | "
                     f"{e['baseline_val_accuracy']:.2f}% | | | | |")  # fmt: skip
        for r in e["rows"]:
            b = r["budget"] or {}
            met = "met" if b.get("met") else "NOT met" if b.get("met") is False else "not judged"
            budget = f"{met} (drop {b['drop']:.2f})" if b.get("drop") is not None else met
            size = f"{r['container_bytes']:,} B ({r['ratio']:.1f}x)"
            layers = f"{r['layers_quantized']} / {len(r['layers_float'])}" if r["layers_quantized"] else ""
            lines.append(f"| | {r['recipe']} | {r['test_accuracy']:.2f}% | {budget} | {size} | {layers} | "
                         f"{_verdict(r['onnx'])} | {_verdict(r['tflite'])} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files (or its parent)")
    parser.add_argument("--out", type=Path, default=Path("architectures.json"))
    parser.add_argument("--models", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--recipes", default="", help="comma-separated built-in recipes (default: all)")
    parser.add_argument(
        "--train-subset", type=int, default=None, help="training images, a fixed random subset (default: the task's)"
    )
    parser.add_argument("--val-size", type=int, default=5_000, help="held-out training images for the budgets")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/baselines"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/architectures"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    return run_models("architectures", args, run_model, markdown, TASKS)


if __name__ == "__main__":
    sys.exit(main())
