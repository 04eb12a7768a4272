"""Shared by the benchmarks: cached baselines and data folders."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from edgeshrink.checkpoints import load_checkpoint, save_checkpoint
from edgeshrink.encode.container import load_into
from edgeshrink.tasks.registry import Task, load_task
from edgeshrink.train import Progress, evaluate, fit, seed_everything

DATA_SUBDIRS = {"mnist": "mnist", "fashion": "fashion-mnist"}


def task_data_dir(root: Path, task: Task) -> Path:
    """`root` itself when it holds the IDX files, else its mnist/ or fashion-mnist/ folder."""
    if any(root.glob("train-images-idx3-ubyte*")):
        return root
    return root / DATA_SUBDIRS["fashion" if task.name.startswith("fashion") else "mnist"]


def baseline(
    task_name: str,
    data,
    cache_dir: Path,
    seed: int,
    progress: Progress,
    epochs: int | None = None,
    train_subset: int | None = None,
    validate: bool = True,
):
    """The trained baseline from the cache, or trained now with the task's own setup (and cached).
    Returns (model, seconds spent training, whether it came from the cache).

    `epochs` and `train_subset` override the task's (and then name the cache file); `validate=False`
    skips the per-epoch test-set accuracy (slow for large models).
    """
    task = load_task(task_name)
    if epochs is not None:
        task = dataclasses.replace(task, train=task.train.model_copy(update={"epochs": epochs}))
    if train_subset is not None:
        task = dataclasses.replace(task, train_subset=train_subset)
    tag = "".join(f"-{k}{v}" for k, v in (("e", epochs), ("n", train_subset)) if v is not None)
    path = cache_dir / f"{task_name}-seed{seed}{tag}.pt"
    if path.is_file():
        return load_into(task.build_model(), load_checkpoint(path)["state_dict"], str(path)), 0.0, True
    started = time.perf_counter()
    seed_everything(seed)
    model = task.build_model()
    fit(
        model,
        task.train_loader(data, seed),
        task.train,
        data.test.loader(1000) if validate else None,
        stage=f"{task_name} baseline",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    save_checkpoint(path, model, task.arch, evaluate(model, data.test.loader(1000)) if validate else None)
    return model, seconds, False
