"""The pruning accuracy budget on a compact network: deep-compression with and without it.

    python benchmarks/budget.py --out budget.json

A MobileNetV3-style net (three inverted residual blocks: depthwise convolutions, squeeze-excite,
hardswish; 15,934 parameters) trained on the built-in digits task (no download), then compressed with
the `deep-compression` recipe as shipped (max_accuracy_drop = 1.0 on its prune stage) and with the
budget removed. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import edgeshrink
from edgeshrink.environment import environment
from edgeshrink.recipes import load_recipe
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import TrainConfig, evaluate, fit


class Block(nn.Module):
    """Inverted residual with squeeze-excite (MobileNetV3)."""

    def __init__(self, cin: int, cexp: int, cout: int, stride: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(cin, cexp, 1, bias=False), nn.BatchNorm2d(cexp), nn.Hardswish())
        self.dw = nn.Sequential(
            nn.Conv2d(cexp, cexp, 3, stride, 1, groups=cexp, bias=False), nn.BatchNorm2d(cexp), nn.Hardswish()
        )
        self.se1, self.se2 = nn.Conv2d(cexp, cexp // 4, 1), nn.Conv2d(cexp // 4, cexp, 1)
        self.project = nn.Sequential(nn.Conv2d(cexp, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(self.expand(x))
        h = h * F.hardsigmoid(self.se2(F.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        h = self.project(h)
        return x + h if self.residual else h


class MobileNetV3Style(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.blocks = nn.Sequential(Block(16, 32, 16, 1), Block(16, 48, 24, 2), Block(24, 64, 24, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(24 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("budget.json"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = load_task("digits-cnn")
    data = task.data(None)
    torch.manual_seed(args.seed)
    model = MobileNetV3Style()
    fit(model, task.train_loader(data, args.seed), TrainConfig(epochs=8, optimizer="adam", lr=3e-3))
    base = evaluate(model, data.test.loader(1000))
    recipe = load_recipe("deep-compression")
    unbudgeted = [cfg.model_copy(update={"max_accuracy_drop": None}) for cfg in recipe.stages]
    variants = {
        "with the 1-point budgets (as shipped)": recipe,
        "without budgets": recipe.model_copy(update={"stages": unbudgeted, "max_accuracy_drop": None}),
    }
    rows = []
    for label, r in variants.items():
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            loaders = {"train_loader": task.train_loader(data, args.seed), "val_loader": data.test.loader(1000)}
            res = edgeshrink.compress(model, r, out=Path(tmp), seed=args.seed, progress=False, **loaders)
        c = res.report["container"]
        rows.append({
            "variant": label, "accuracy": c["accuracy"], "drop": base - c["accuracy"], "bytes": c["bytes"],
            "ratio": c["ratio"], "kept_percent": res.report["layers"]["total"]["kept_percent"],
            "notes": [n for s in res.report["stages"] for n in s["notes"]], "seconds": time.perf_counter() - started,
        })  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    args.out.write_text(json.dumps({"baseline_accuracy": base, "parameters": params, "rows": rows,
                                    "environment": environment()}, indent=2))  # fmt: skip
    print(f"MobileNetV3-style, {params:,} parameters, digits baseline {base:.2f}%")
    print("| deep-compression | accuracy | drop | container | weights kept | note |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        size = f"{row['bytes']:,} B ({row['ratio']:.1f}x)"
        note = "; ".join(row["notes"]) or "none"
        kept = f"{row['kept_percent']:.1f}%"
        print(f"| {row['variant']} | {row['accuracy']:.2f}% | {row['drop']:.2f} points | {size} | {kept} | {note} |")


if __name__ == "__main__":
    main()
