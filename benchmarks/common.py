"""Shared by the benchmarks: cached baselines, data folders, common options and the run-and-write loop."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.environment import environment
from edgeshrink.errors import DataError
from edgeshrink.io import load
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.tasks.registry import Task, load_task
from edgeshrink.train import Progress, evaluate, fit, seed_everything

DATA_SUBDIRS = {"mnist": "mnist", "fashion": "fashion-mnist"}
MODEL_TASKS = {  # the int8 benchmarks' models
    "lenet5": "mnist-lenet5",
    "resnet8x4": "fashion-resnet8x4",
    "transformer": "mnist-row-transformer",
    "gru": "mnist-row-gru",
    "mobilenetv3": "mnist-mobilenetv3",
}


def add_run_options(parser: argparse.ArgumentParser, runs_dir: str) -> None:
    """Timing, cache, output-folder, seed and quiet options, the same in every benchmark."""
    parser.add_argument("--runs", type=int, default=100, help="timed runs per file and batch size")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="runtime intra-op threads")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/baselines"))
    parser.add_argument("--runs-dir", type=Path, default=Path(runs_dir))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")


def run_models(
    benchmark: str, args, run_model: Callable, markdown: Callable[[list[dict]], str], choices=MODEL_TASKS
) -> int:
    """Run `run_model(name, args, progress)` for each of --models (names from `choices`), write the JSON
    to --out, print markdown."""
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        print(f"error: unknown model(s) {unknown}; choose from {', '.join(choices)}", file=sys.stderr)
        return 2
    progress = Progress(not args.quiet)
    payload = {"benchmark": benchmark, "command": " ".join(sys.argv), "environment": environment()}
    entries: list[dict] = []
    try:
        for name in names:
            entries.append(run_model(name, args, progress))
            _write_json(args.out, {**payload, "complete": len(entries) == len(names), "results": entries})
    except edgeshrink.EdgeshrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(entries))
    return 0


def _write_json(path: Path, payload: dict) -> None:
    """Write the results so far, whole or not at all (a long run keeps the models it finished; `complete`
    says whether every model of --models is in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, default=str))
    partial.replace(path)


def task_data_dir(root: Path, task: Task) -> Path:
    """`root` itself when it holds the IDX files, else its mnist/ or fashion-mnist/ folder. A folder of IDX files
    named for the other dataset is refused (MNIST images would silently stand in for Fashion-MNIST)."""
    fashion = task.name.startswith("fashion")
    if any(root.glob("train-images-idx3-ubyte*")):
        if fashion != ("fashion" in root.resolve().name.lower()):
            raise DataError(
                f"{root} holds {'MNIST' if fashion else 'Fashion-MNIST'} files but {task.name} needs "
                f"{'Fashion-MNIST' if fashion else 'MNIST'}: pass --data-dir the folder holding mnist/ and "
                "fashion-mnist/"
            )
        return root
    return root / DATA_SUBDIRS["fashion" if fashion else "mnist"]


def baseline(
    task_name: str,
    data,
    cache_dir: Path,
    seed: int,
    progress: Progress,
    epochs: int | None = None,
    train_subset: int | None = None,
    validate: bool = True,
    val_split=None,
    tag: str = "",
    shift: int = 0,
):
    """The trained baseline from the cache, or trained now with the task's own setup (and cached).
    Returns (model, seconds spent training, whether it came from the cache).

    `epochs` and `train_subset` override the task's (and then name the cache file); `validate=False`
    skips the per-epoch accuracy (slow for large models), measured on `val_split` when given (a split held
    out of `data`'s training set, whose `tag` then names the cache file), else on the test split. `shift`
    trains on images shifted by up to that many pixels (`TrainConfig.shift`; names the cache file too).
    """
    task = load_task(task_name)
    if epochs is not None:
        task = dataclasses.replace(task, train=task.train.model_copy(update={"epochs": epochs}))
    if train_subset is not None:
        task = dataclasses.replace(task, train_subset=train_subset)
    if shift:
        task = dataclasses.replace(task, train=task.train.model_copy(update={"shift": shift}))
    named = (("e", epochs), ("n", train_subset), ("shift", shift or None))
    tag += "".join(f"-{k}{v}" for k, v in named if v is not None)
    path = cache_dir / f"{task_name}-seed{seed}{tag}.pt"
    if path.is_file():
        return load(path, task.build_model()).model, 0.0, True
    started = time.perf_counter()
    seed_everything(seed)
    model = task.build_model()
    monitor = (val_split or data.test).loader(1000) if validate else None
    fit(model, task.train_loader(data, seed), task.train, monitor, stage=f"{task_name} baseline", progress=progress)
    seconds = time.perf_counter() - started
    accuracy = evaluate(model, monitor) if monitor is not None else None
    save_checkpoint(path, Artifact(model, Arch.parse(task.arch)), accuracy)
    return model, seconds, False


def initial_weights(task_name: str, seed: int) -> dict:
    """The weights `baseline` starts training from (the same seed, the same build): what a recipe that
    rewinds (lottery tickets) resets the kept weights to."""
    seed_everything(seed)
    return load_task(task_name).build_model().state_dict()
