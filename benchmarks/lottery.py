"""Lottery tickets on LeNet-300-100 / MNIST (Frankle & Carbin, ICLR 2019, section 2), with edgeshrink's prune stage.

    python benchmarks/search.py --data-dir ../shared/data --parts lottery --out lottery.json

As in the paper: 5,000 training images held out for validation, Adam at 1.2e-3, batches of 60, the same number of
iterations in every training run; iterative magnitude pruning removes 20% of fc1's and fc2's remaining weights and
10% of the output layer's per round (the `geometric` schedule), and every round rewinds the kept weights to their
initial values (`rewind = "init"`). Tickets at 51.3%, 21.1%, 7.0% and 3.6% of the weights (rounds 3, 7, 12, 15) are
compared with the same masks on a random re-initialisation. Validation and test accuracy are measured every
--eval-every iterations; the early-stopping iteration is the one with the best validation accuracy, and the test
accuracy is read there (the paper's protocol).
"""

from __future__ import annotations

import copy
import time

from edgeshrink.artifact import Artifact
from edgeshrink.stages.base import StageContext, apply_stage
from edgeshrink.stages.prune import PruneConfig
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, TrainConfig, evaluate, fit, seed_everything
from edgeshrink.weights import get_mask, rewind_to

TICKET_ROUNDS = {3: 51.3, 7: 21.1, 12: 7.0, 15: 3.6}  # round -> percent of the weights left (the paper's figures)
BATCH, LR = 60, 1.2e-3


class Curve:
    """Validation and test accuracy every `every` iterations of one training run."""

    def __init__(self, model, val, test, every: int) -> None:
        self.model, self.val, self.test, self.every = model, val, test, every
        self.step, self.points = 0, []

    def __call__(self) -> None:
        self.step += 1
        if self.step % self.every == 0:
            self.points.append((self.step, evaluate(self.model, self.val), evaluate(self.model, self.test)))

    def summary(self) -> dict:
        step, val, test = max(self.points, key=lambda p: (p[1], -p[0]))  # best validation, earliest on ties
        return {"early_stop_iteration": step, "val_accuracy": val, "test_accuracy_at_early_stop": test,
                "final_test_accuracy": self.points[-1][2], "curve": self.points}  # fmt: skip


def _train(model, data, val, test, epochs: int, every: int, seed: int) -> dict:
    """One training run (the same batches in the same order every time), with its accuracy curve."""
    curve = Curve(model, val, test, every)
    seed_everything(seed)
    cfg = TrainConfig(epochs=epochs, optimizer="adam", lr=LR, schedule="constant")
    fit(model, data.train.loader(BATCH, shuffle=True, seed=seed), cfg, progress=Progress(False), after_step=curve)
    return curve.summary()


def _percent_left(model) -> float:
    kept = total = 0
    for name in ("fc1", "fc2", "fc3"):
        mask = get_mask(getattr(model, name))
        total += getattr(model, name).weight.numel()
        kept += int(mask.sum()) if mask is not None else getattr(model, name).weight.numel()
    return 100.0 * kept / total


def run_lottery(args, progress: Progress) -> list[dict]:
    task = load_task("mnist-lenet300")
    full = task.data(args.data_dir / "mnist")
    data, held = full.hold_out(5000, seed=args.seed)
    val, test = held.loader(5000), full.test.loader(10000)
    epochs, every = args.lottery_epochs, args.eval_every
    seed_everything(args.seed)
    init = task.build_model()
    theta0 = copy.deepcopy(init.state_dict())
    seed_everything(args.seed + 1)
    other = copy.deepcopy(task.build_model().state_dict())  # the random re-initialisation of the control
    started = time.perf_counter()
    model = copy.deepcopy(init)
    rows = [{"round": 0, "percent_left": 100.0, "rewound": _train(model, data, val, test, epochs, every, args.seed)}]
    progress.line(f"[lottery] dense: {rows[0]['rewound']['test_accuracy_at_early_stop']:.2f}%")
    artifact = Artifact(model)
    results: dict = {}

    def train_round(m, cfg, label):
        results["last"] = _train(m, data, val, test, epochs, every, args.seed)
        return []

    ctx = StageContext(train_round, None, rewind_weights=theta0)
    for i in range(1, max(TICKET_ROUNDS) + 1):
        cfg = PruneConfig(method="sparsity", scheme="layerwise", sparsity=1 - 0.8**i, per_layer={"last": 1 - 0.9**i},
                          iterations=1, schedule="constant", rewind="init", finetune=TrainConfig(epochs=1))  # fmt: skip
        artifact = apply_stage(artifact.replace(records=[]), cfg, ctx)
        row = {"round": i, "percent_left": _percent_left(artifact.model), "rewound": results["last"]}
        if i in TICKET_ROUNDS:
            control = copy.deepcopy(artifact.model)  # the ticket's masks, random weights
            rewind_to(control, other)
            row["random_reinit"] = _train(control, data, val, test, epochs, every, args.seed)
        rows.append(row)
        progress.line(f"[lottery] round {i}: {row['percent_left']:.1f}% left, rewound "
                      f"{row['rewound']['test_accuracy_at_early_stop']:.2f}% at iteration "
                      f"{row['rewound']['early_stop_iteration']}")  # fmt: skip
    steps = epochs * ((len(data.train.labels) + BATCH - 1) // BATCH)
    return [{"part": "lottery", "model": "lenet300", "iterations_per_run": steps, "eval_every": every,
             "minutes": (time.perf_counter() - started) / 60, "rows": rows}]  # fmt: skip


def reaching(curve: list, level: float) -> int | None:
    """The first measured iteration whose validation accuracy is at least `level` (None: never)."""
    return next((step for step, val, _ in curve if val >= level), None)


def markdown(entry: dict) -> str:
    """The tickets against their random re-initialisations: early stopping as in the paper, and how fast each run
    comes within half a point of the dense net's best validation accuracy."""
    level = max(v for _, v, _ in entry["rows"][0]["rewound"]["curve"]) - 0.5

    def cells(run: dict | None) -> str:
        if run is None:
            return "- | - | -"
        reached = reaching(run["curve"], level)
        return (f"{run['early_stop_iteration']:,} | {run['test_accuracy_at_early_stop']:.2f}% | "
                f"{'never' if reached is None else f'{reached:,}'}")  # fmt: skip

    lines = [f"| weights left | rewound: early-stop iteration | test there | iterations to {level:.2f}% val "
             "| random re-init: early-stop iteration | test there | iterations to that val |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in entry["rows"]:
        if r["round"] and r["round"] not in TICKET_ROUNDS:
            continue
        lines.append(f"| {r['percent_left']:.1f}% | {cells(r['rewound'])} | {cells(r.get('random_reinit'))} |")
    return "\n".join(lines)


def add_options(parser) -> None:
    parser.add_argument("--lottery-epochs", type=int, default=13, help="epochs per training run (917 iterations each)")
    parser.add_argument("--eval-every", type=int, default=500, help="iterations between accuracy measurements")
