"""Reproduce Deep Compression's Table 1 on MNIST: LeNet-300-100 and LeNet-5, error and size.

    python benchmarks/deep_compression.py --data-dir ../shared/data/mnist --out results.json

Trains each baseline (or loads it from --cache-dir), compresses it with a recipe, then rebuilds the
model from the written container alone and measures its error on the 10,000 test images. Writes one
JSON entry per model and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import edgeshrink
from edgeshrink.environment import environment
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import baseline  # noqa: E402

# Deep Compression, Table 1 (error %, dense KB, compressed KB, ratio).
PAPER = {
    "lenet300": {"baseline_error": 1.64, "compressed_error": 1.58, "dense_kb": 1070, "compressed_kb": 27, "ratio": 40},
    "lenet5": {"baseline_error": 0.80, "compressed_error": 0.74, "dense_kb": 1720, "compressed_kb": 44, "ratio": 39},
}
TASKS = {"lenet300": "mnist-lenet300", "lenet5": "mnist-lenet5"}


def run_model(name: str, recipe: str, args, progress: Progress) -> dict:
    task = load_task(TASKS[name])
    data = task.data(args.data_dir)
    # What the recipe's decisions (budgets, back-offs, sensitivity) are judged on: never the test split.
    if args.holdout:  # images held out of the baseline's training (how the recipes' settings were chosen)
        data, val = data.hold_out(args.holdout, seed=args.seed)
    else:  # the baseline trains on all 60,000 images; decisions are judged on some of them
        val = data.train.subset(args.judge_images, seed=args.seed)
    # Without a holdout: the baseline the other benchmarks cache too (its training only shows test accuracy
    # per epoch; nothing is chosen on it).
    held = {"val_split": val, "tag": f"-h{args.holdout}"} if args.holdout else {}
    model, train_seconds, cached = baseline(
        task.name, data, args.cache_dir, args.seed, progress, shift=args.baseline_shift, **held
    )
    base_acc = evaluate(model, data.test.loader(1000))
    val_loader = val.loader(1000)
    started = time.perf_counter()
    result = edgeshrink.compress(
        model,
        recipe,
        out=args.runs_dir / name,
        seed=args.seed,
        arch=task.arch,
        progress=progress.enabled,
        train_loader=data.train.loader(task.batch_size, shuffle=True, seed=args.seed),
        val_loader=val_loader,
        baseline_accuracy=evaluate(model, val_loader),
    )
    compress_seconds = time.perf_counter() - started
    # Independent of the pipeline's own check: rebuild from the file alone and measure.
    decoded = edgeshrink.load(result.path).model  # the zoo model the file names, edits and all replayed
    compressed_acc = evaluate(decoded, data.test.loader(1000))
    report = result.report
    size = result.path.stat().st_size
    ratios = {r["stage"]: r["ratio"] for r in report["stage_ratios"]}
    return {
        "model": name,
        "task": task.name,
        "recipe": report["recipe"]["name"],
        "decisions_judged_on": f"{args.holdout} images held out of training"
        if args.holdout
        else f"{args.judge_images} of the training images (the test split is used only for the errors)",
        "baseline_error": round(100 - base_acc, 2),
        "compressed_error": round(100 - compressed_acc, 2),
        "dense_bytes": report["baseline"]["dense_bytes"],
        "compressed_bytes": size,
        "ratio": report["baseline"]["dense_bytes"] / size,
        "stage_ratios": {
            "pruning": ratios.get("prune"),
            "pruning+sharing": ratios.get("share"),
            "pruning+sharing+huffman": ratios.get("encode"),
        },
        "kept_percent": report["layers"]["total"]["kept_percent"],
        "huffman_vs_entropy_percent": report["entropy"]["overhead_percent"],
        "per_layer": per_layer(report),
        "layers": report["layers"]["rows"],
        "stage_notes": {s["stage"]: s["notes"] for s in report["stages"] if s["notes"]},
        "seconds": {
            "baseline_training": round(train_seconds, 1),
            "baseline_cached": cached,
            "compression": round(compress_seconds, 1),
            "total": round(train_seconds + compress_seconds, 1),
        },
        "paper": PAPER[name],
        "meets_paper": (100 - compressed_acc) <= PAPER[name]["baseline_error"]
        and report["baseline"]["dense_bytes"] / size >= PAPER[name]["ratio"],
    }


def per_layer(report: dict) -> list[dict]:
    """Each weight layer's sparsity (from the pruning stage), codebook bits (from sharing) and stored bits
    per weight (from the container): the recipe's per-layer decisions, which its budgets may have changed."""
    stages = {s["stage"]: {row["layer"]: row for row in s["layers"]} for s in report["stages"]}
    rows = []
    for row in report["layers"]["rows"]:
        if not row["layer"].endswith(".weight"):
            continue
        layer = row["layer"].removesuffix(".weight")
        pruned, shared = stages.get("prune", {}).get(layer, {}), stages.get("share", {}).get(layer, {})
        rows.append(
            {
                "layer": layer,
                "weights": row["weights"],
                "sparsity_percent": round(100 - row["kept_percent"], 3),
                "planned_sparsity": pruned.get("setting"),
                "codebook_bits": shared.get("bits"),
                "stored_bits_per_nonzero": round(
                    8 * row["bytes_huffman"] / max(1, round(row["weights"] * row["kept_percent"] / 100)), 2
                ),
            }
        )
    return rows


def markdown(entries: list[dict]) -> str:
    lines = [
        "| model | recipe | error before -> after | size before -> after | ratio | P / P+Q / P+Q+H | "
        "Huffman vs entropy | time | paper |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        s, p = e["stage_ratios"], e["paper"]
        lines.append(
            f"| {e['model']} | {e['recipe']} | {e['baseline_error']:.2f}% -> {e['compressed_error']:.2f}% | "
            f"{e['dense_bytes'] / 1000:.0f} KB -> {e['compressed_bytes'] / 1000:.1f} KB | {e['ratio']:.1f}x | "
            f"{s['pruning']:.1f}x / {s['pruning+sharing']:.1f}x / {s['pruning+sharing+huffman']:.1f}x | "
            f"+{e['huffman_vs_entropy_percent']:.2f}% | {e['seconds']['total'] / 60:.1f} min | "
            f"{p['baseline_error']}% -> {p['compressed_error']}%, {p['ratio']}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--recipe", default="deep-compression", help="recipe for every model")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/baselines"))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/deep-compression-benchmark"))
    parser.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="hold this many training images out of the baseline's training and judge the recipe's decisions "
        "on them (how recipe settings are chosen); 0: train on all images",
    )
    parser.add_argument(
        "--judge-images",
        type=int,
        default=5000,
        help="without --holdout: the training images the recipe's budgets and sensitivity are judged on",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline-shift",
        type=int,
        default=2,
        help="train the baselines on images shifted by up to this many pixels (the recipe's fine-tunes are "
        "unchanged; names the cached baseline); 0: without shifts, as Deep Compression's Table 1 was measured",
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    progress = Progress(not args.quiet)
    try:
        entries = [run_model(m.strip(), args.recipe, args, progress) for m in args.models.split(",")]
    except edgeshrink.EdgeshrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "deep-compression",
                "command": " ".join(sys.argv),
                "environment": environment(),
                "results": entries,
            },
            indent=2,
        )
    )
    print(markdown(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
