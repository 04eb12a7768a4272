"""int8 variants measured on several calibration samples and averaged: what calibration_methods.py and
float_points.py share. Each sample is one random permutation of the training images: its first n are the
calibration images (the quantization benchmark's sample for that seed: Split.subset takes a prefix), the next
n are held out to measure the quantized model's logit error against fp32 without labels."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import MODEL_TASKS, add_run_options, baseline, task_data_dir  # noqa: E402
from torch import nn

from edgeshrink.recipes import Recipe, load_recipe
from edgeshrink.tasks.data import Split
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, evaluate

KEYS = ("held_out_logit_mse", "test_accuracy")
# (fp32 model, task, data, calibration images, held-out images, fp32 logits on them, seed) -> {variant: row}
OneSample = Callable[[nn.Module, object, object, Split, torch.Tensor, torch.Tensor, int], dict[str, dict]]


def add_sample_options(parser: argparse.ArgumentParser, models: str, runs_dir: str) -> None:
    """--data-dir, --out, --models, --calibration-images, --calibration-seeds and the common run options."""
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default=models)
    parser.add_argument("--calibration-images", type=int, default=2048)
    parser.add_argument(
        "--calibration-seeds", default="", help="average over these calibration samples (default: --seed's only)"
    )
    add_run_options(parser, runs_dir)


def parse_sample_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.calibration_seeds = [int(x) for x in args.calibration_seeds.split(",") if x.strip()]
    return args


def int8_recipe(**stage: object) -> Recipe:
    """The built-in `int8` recipe with its quantize stage's settings overridden by `stage` (none: as shipped)."""
    recipe = load_recipe("int8")
    return recipe.model_copy(update={"stages": [recipe.stages[0].model_copy(update=stage)]})


def measure(quantized: nn.Module, held: torch.Tensor, reference: torch.Tensor, data) -> dict[str, float]:
    """Held-out logit MSE against fp32, and test accuracy."""
    with torch.no_grad():
        mse = float(((quantized(held) - reference) ** 2).mean())
    return {"held_out_logit_mse": mse, "test_accuracy": evaluate(quantized, data.test.loader(1000))}


def run_samples(name: str, args, progress: Progress, one_sample: OneSample, what: str) -> tuple[dict, dict]:
    """(the model's entry: fp32 accuracy and every sample's rows, the rows' means over the samples)."""
    task = load_task(MODEL_TASKS[name])
    data = task.data(task_data_dir(args.data_dir, task))
    model = baseline(task.name, data, args.cache_dir, args.seed, progress)[0].eval()
    n, samples = args.calibration_images, {}
    for seed in args.calibration_seeds or [args.seed]:
        progress.line(f"[{name}] {what}, calibration sample {seed}")
        sample = data.train.subset(2 * n, seed=seed)
        calibration, held = Split(sample.inputs[:n], sample.labels[:n]), sample.inputs[n:]
        with torch.no_grad():
            reference = model(held)
        samples[seed] = one_sample(model, task, data, calibration, held, reference, seed)
    first = next(iter(samples.values()))
    means = {v: {k: float(np.mean([s[v][k] for s in samples.values()])) for k in KEYS} for v in first}
    entry = {
        "model": name,
        "fp32_test_accuracy": evaluate(model, data.test.loader(1000)),
        "held_out_images": n,
        "calibration_samples": {str(k): v for k, v in samples.items()},
    }
    return entry, means
