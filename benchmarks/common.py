"""Shared by the benchmarks: cached baselines and data folders."""

from __future__ import annotations

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


def baseline(task_name: str, data, cache_dir: Path, seed: int, progress: Progress):
    """The trained baseline from the cache, or trained now with the task's own setup (and cached).
    Returns (model, seconds spent training, whether it came from the cache)."""
    task = load_task(task_name)
    path = cache_dir / f"{task_name}-seed{seed}.pt"
    if path.is_file():
        return load_into(task.build_model(), load_checkpoint(path)["state_dict"], str(path)), 0.0, True
    started = time.perf_counter()
    seed_everything(seed)
    model = task.build_model()
    fit(
        model,
        task.train_loader(data, seed=seed),
        task.train,
        data.test.loader(1000),
        stage=f"{task_name} baseline",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    save_checkpoint(path, model, task.arch, evaluate(model, data.test.loader(1000)))
    return model, seconds, False
