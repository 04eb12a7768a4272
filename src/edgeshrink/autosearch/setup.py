"""Everything a search needs before its first trial: the data (a validation split held out from training, so
nothing is chosen on the test split), the trained baseline, and the inputs exports calibrate and verify on."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from edgeshrink.autosearch.candidate import Baseline, SearchData
from edgeshrink.errors import ConfigError
from edgeshrink.train import Progress, evaluate, fit, seed_everything

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
VERIFY_EXAMPLES = 512  # validation examples every export is verified on
CALIBRATION_BATCHES = 8
MAX_HOLDOUT = 5000


def _first(batches: Batches, examples: int) -> list[torch.Tensor]:
    out, seen = [], 0
    for x, *_ in batches:
        out.append(x[: examples - seen])
        seen += len(out[-1])
        if seen >= examples:
            break
    return out


def reseeded(loader: Batches, seed: int) -> Callable[[], Batches]:
    """A factory of training loaders that all shuffle alike (a copy of an edgeshrink TensorLoader with a fresh
    generator), so every candidate trains on the same batches and a front recipe reproduces exactly; other
    loaders are handed out as they are."""
    if not hasattr(loader, "_generator"):
        return lambda: loader

    def fresh() -> Batches:
        other = copy.copy(loader)
        other._generator = torch.Generator().manual_seed(seed)  # type: ignore[attr-defined]
        return other

    return fresh


def user_data(train_loader: Batches, val_loader: Batches, test_loader: Batches | None, seed: int) -> SearchData:
    """SearchData from a user's loaders (the validation loader must not be the test data a result is quoted on)."""
    calibration = [x for x, *_ in itertools.islice(iter(reseeded(train_loader, seed)()), CALIBRATION_BATCHES)]
    verify = _first(val_loader, VERIFY_EXAMPLES)
    if not verify:
        raise ConfigError("the validation loader gave no batch: a search needs validation data to choose on")
    classes = int(max(int(y.max()) for _, y, *_ in itertools.islice(iter(val_loader), 4))) + 1
    return SearchData(
        reseeded(train_loader, seed), val_loader, test_loader, calibration, verify, verify[0][:1], classes
    )


def task_data(task, data_dir: Path | None, holdout: int | None, seed: int) -> SearchData:
    """SearchData of a built-in task: `holdout` training examples (default: a fifth, at most 5,000) held out as the
    validation split."""
    full = task.data(data_dir)
    holdout = holdout if holdout is not None else min(MAX_HOLDOUT, len(full.train.labels) // 5)
    data, val = full.hold_out(holdout)
    calibration = [x for x, _ in itertools.islice(iter(data.train.loader(128)), CALIBRATION_BATCHES)]
    verify = _first(val.loader(256), VERIFY_EXAMPLES)
    return SearchData(
        lambda: task.train_loader(data, seed), val.loader(1000), data.test.loader(1000), calibration, verify,
        verify[0][:1], data.num_classes, holdout,
    )  # fmt: skip


def task_baseline(task, data: SearchData, weights: Path | None, out: Path, seed: int, progress: Progress) -> Baseline:
    """The task's trained model: from `weights`, from the search folder's baseline.pt, or trained now (on the
    training split without the held-out examples) and saved there, so every worker and rerun uses the same."""
    from edgeshrink.architecture import Arch
    from edgeshrink.artifact import Artifact
    from edgeshrink.io import load, save_checkpoint

    path = weights if weights is not None else out / "baseline.pt"
    if path.is_file():
        art = load(path, task.build_model())
        model, arch = art.model, art.arch.to_dict() or task.arch
        progress.line(f"[search] baseline from {path}")
    else:
        seed_everything(seed)
        model = task.build_model()
        fit(model, data.train(), task.train, data.val, stage="baseline", progress=progress)
        arch = task.arch
        save_checkpoint(path, Artifact(model, Arch.parse(arch), example_input=data.example), evaluate(model, data.val))
    test = None if data.test is None else evaluate(model, data.test)
    return Baseline(model.eval(), arch, evaluate(model, data.val), test, str(path))


def user_baseline(model: nn.Module, data: SearchData, arch: dict | None) -> Baseline:
    test = None if data.test is None else evaluate(model, data.test)
    return Baseline(copy.deepcopy(model).eval(), arch, evaluate(model, data.val), test)
