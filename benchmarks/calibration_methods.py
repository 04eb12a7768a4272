"""Which activation calibration should the int8 recipe use? Decided without labels.

    python benchmarks/calibration_methods.py --data-dir ../shared/data --out results.json

For each model: int8 PTQ (the `int8` recipe) with every calibration method (minmax, percentile, MSE,
KL; --methods) and weight rounding (nearest, GPTQ; --roundings) on the same 2,048 calibration images
(or on each of --calibration-seeds' samples, averaged), and the mean squared logit error of each
quantized PyTorch model against the fp32 model on 2,048 other training images; the variant with the
smallest error is the label-free choice. Test accuracy is reported beside it, not used to choose.
Baselines come from --cache-dir (shared with the other benchmarks).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import edgeshrink
from edgeshrink.recipes import load_recipe
from edgeshrink.tasks.data import Split
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, add_run_options, baseline, run_models, task_data_dir  # noqa: E402

METHODS = ("minmax", "percentile", "mse", "kl")
ROUNDINGS = ("nearest", "gptq")


def _variants(args) -> list[tuple[str, str, str]]:
    """(name, calibration, rounding): the method's name alone for nearest rounding, else method/rounding."""
    return [
        (m if r == "nearest" else f"{m}/{r}", m, r) for r in args.roundings.split(",") for m in args.methods.split(",")
    ]


def _one_sample(model, task, data, seed: int, n: int, variants: list[tuple[str, str, str]]) -> dict[str, dict]:
    """Every method on calibration sample `seed`: held-out logit MSE against fp32, and test accuracy."""
    # one random permutation: its first images are the quantization benchmark's calibration sample
    # (Split.subset takes a prefix), the next as many are the held-out images
    sample = data.train.subset(2 * n, seed=seed)
    calibration, held = Split(sample.inputs[:n], sample.labels[:n]), sample.inputs[n:]
    with torch.no_grad():
        reference = model(held)
    recipe = load_recipe("int8")
    rows = {}
    for name, method, rounding in variants:
        stage = recipe.stages[0].model_copy(update={"calibration": method, "rounding": rounding})
        with tempfile.TemporaryDirectory() as tmp:
            result = edgeshrink.compress(
                model, recipe.model_copy(update={"stages": [stage]}), calibration_loader=calibration.loader(128),
                out=Path(tmp), seed=seed, arch=task.arch, progress=False,
            )  # fmt: skip
        quantized = result.model.eval()
        with torch.no_grad():
            logits = quantized(held)
        rows[name] = {
            "held_out_logit_mse": float(((logits - reference) ** 2).mean()),
            "test_accuracy": evaluate(quantized, data.test.loader(1000)),
        }
    return rows


def run_model(name: str, args, progress: Progress) -> dict:
    task = load_task(MODEL_TASKS[name])
    data = task.data(task_data_dir(args.data_dir, task))
    model = baseline(task.name, data, args.cache_dir, args.seed, progress)[0].eval()
    samples = {}
    for seed in args.calibration_seeds or [args.seed]:
        progress.line(f"[{name}] int8 PTQ with every calibration method, calibration sample {seed}")
        samples[seed] = _one_sample(model, task, data, seed, args.calibration_images, _variants(args))
    rows = {
        m: {k: float(np.mean([s[m][k] for s in samples.values()])) for k in ("held_out_logit_mse", "test_accuracy")}
        for m, _, _ in _variants(args)
    }
    return {
        "model": name,
        "fp32_test_accuracy": evaluate(model, data.test.loader(1000)),
        "held_out_images": args.calibration_images,
        "calibration_samples": {str(k): v for k, v in samples.items()},
        "methods": rows,  # means over the samples
        "label_free_choice": min(rows, key=lambda m: rows[m]["held_out_logit_mse"]),
    }


def markdown(entries: list[dict]) -> str:
    lines = [
        "| model | calibration | held-out logit MSE vs fp32 | test accuracy (fp32), mean over samples |",
        "| --- | --- | --- | --- |",
    ]
    for e in entries:
        for method, r in sorted(e["methods"].items(), key=lambda kv: kv[1]["held_out_logit_mse"]):
            mark = " (chosen)" if method == e["label_free_choice"] else ""
            lines.append(
                f"| {e['model']} | {method}{mark} | {r['held_out_logit_mse']:.5f} | "
                f"{r['test_accuracy']:.2f}% ({e['fp32_test_accuracy']:.2f}%) |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default="lenet5,resnet8x4")
    parser.add_argument("--calibration-images", type=int, default=2048)
    parser.add_argument("--methods", default=",".join(METHODS), help="calibration methods to compare")
    parser.add_argument("--roundings", default="nearest", help=f"weight roundings to compare: {', '.join(ROUNDINGS)}")
    parser.add_argument(
        "--calibration-seeds", default="", help="average over these calibration samples (default: --seed's only)"
    )
    add_run_options(parser, "runs/calibration-methods")
    args = parser.parse_args(argv)
    args.calibration_seeds = [int(x) for x in args.calibration_seeds.split(",") if x.strip()]
    return run_models("calibration-methods", args, run_model, markdown)


if __name__ == "__main__":
    sys.exit(main())
