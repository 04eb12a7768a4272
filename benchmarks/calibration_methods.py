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

import edgeshrink
from edgeshrink.train import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibration_samples import (  # noqa: E402
    add_sample_options,
    int8_recipe,
    measure,
    parse_sample_args,
    run_samples,
)
from common import run_models  # noqa: E402

METHODS = ("minmax", "percentile", "mse", "kl")
ROUNDINGS = ("nearest", "gptq", "gptq-float")


def _variants(args) -> list[tuple[str, str, str]]:
    """(name, calibration, rounding): the method's name alone for nearest rounding, else method/rounding."""
    return [
        (m if r == "nearest" else f"{m}/{r}", m, r) for r in args.roundings.split(",") for m in args.methods.split(",")
    ]


def _sample(variants: list[tuple[str, str, str]]):
    """Every method on one calibration sample (see calibration_samples.py)."""

    def one_sample(model, task, data, calibration, held, reference, seed: int) -> dict[str, dict]:
        rows = {}
        for name, method, rounding in variants:
            recipe = int8_recipe(calibration=method, rounding=rounding)
            with tempfile.TemporaryDirectory() as tmp:
                result = edgeshrink.compress(
                    model, recipe, calibration_loader=calibration.loader(128),
                    out=Path(tmp), seed=seed, arch=task.arch, progress=False,
                )  # fmt: skip
            rows[name] = measure(result.model.eval(), held, reference, data)
        return rows

    return one_sample


def run_model(name: str, args, progress: Progress) -> dict:
    entry, rows = run_samples(name, args, progress, _sample(_variants(args)), "int8 PTQ with every calibration method")
    return entry | {
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
    add_sample_options(parser, "lenet5,resnet8x4", "runs/calibration-methods")
    parser.add_argument("--methods", default=",".join(METHODS), help="calibration methods to compare")
    parser.add_argument("--roundings", default="nearest", help=f"weight roundings to compare: {', '.join(ROUNDINGS)}")
    return run_models("calibration-methods", parse_sample_args(parser, argv), run_model, markdown)


if __name__ == "__main__":
    sys.exit(main())
