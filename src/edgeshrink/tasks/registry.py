"""Named tasks: a zoo model, its data, and how to train its baseline. A user's own task needs none of
this: `edgeshrink.compress` takes any model and loaders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.tasks.data import Dataset, TensorLoader, load_digits, load_idx_dataset
from edgeshrink.tasks.zoo import create_model, model_entry
from edgeshrink.train import TrainConfig


@dataclass(frozen=True)
class Task:
    name: str
    model: str  # zoo name
    load: Callable[[Path | None], Dataset]
    train: TrainConfig  # baseline training
    description: str
    needs_data_dir: bool = True
    batch_size: int = 128
    epoch_repeats: int = 1  # tiny data sets count several passes as one epoch, so recipes mean the same
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)  # options of the zoo model (width=4, ...)
    # Train on a fixed random subset of this many training examples (always the same subset, drawn with
    # seed 0), for models too slow to train on the whole set on a CPU. Applies to every training run
    # the CLI starts for the task (baseline, fine-tuning, distillation); None: the whole training set.
    train_subset: int | None = None

    def build_model(self) -> nn.Module:
        return create_model(self.model, **self.model_kwargs)

    def train_loader(self, data: Dataset, seed: int = 0) -> TensorLoader:
        """Shuffled training batches: the task's batch size, repeats and training subset applied."""
        split = data.train if self.train_subset is None else data.train.subset(self.train_subset, seed=0)
        return split.loader(self.batch_size, shuffle=True, seed=seed, repeats=self.epoch_repeats)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return model_entry(self.model).input_shape

    def data(self, data_dir: str | Path | None = None) -> Dataset:
        return self.load(Path(data_dir) if data_dir is not None else None)

    @property
    def arch(self) -> dict:
        """What a container records so that the model can be rebuilt from the file alone
        (`model_kwargs` only when the task configures the model)."""
        arch: dict = {"task": self.name, "model": self.model}
        if self.model_kwargs:
            arch["model_kwargs"] = dict(self.model_kwargs)
        return arch


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def load_task(name: str) -> Task:
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}")
    return _TASKS[name]


MNIST_MEAN_STD = (0.1307, 0.3081)
FASHION_MEAN_STD = (0.2860, 0.3530)


def _mnist(data_dir: Path | None) -> Dataset:
    return load_idx_dataset("mnist", data_dir, *MNIST_MEAN_STD)


def _fashion(data_dir: Path | None) -> Dataset:
    return load_idx_dataset("fashion-mnist", data_dir, *FASHION_MEAN_STD)


register_task(
    Task(
        "digits-cnn",
        "digits-cnn",
        lambda _dir: load_digits(),
        TrainConfig(epochs=6, optimizer="adam", lr=3e-3, weight_decay=1e-4),
        "scikit-learn 8x8 digits (built in, no download), small CNN",
        needs_data_dir=False,
        batch_size=64,
        epoch_repeats=8,
    )
)
register_task(
    Task(
        "mnist-lenet300",
        "lenet300",
        _mnist,
        TrainConfig(epochs=30, optimizer="sgd", lr=0.05, weight_decay=1e-4),
        "MNIST (IDX files from --data-dir), LeNet-300-100",
    )
)
register_task(
    Task(
        "mnist-lenet5",
        "lenet5",
        _mnist,
        TrainConfig(epochs=12, optimizer="adam", lr=1e-3),
        "MNIST (IDX files from --data-dir), LeNet-5 Caffe variant",
    )
)
register_task(
    Task(
        "fashion-lenet5",
        "lenet5",
        _fashion,
        TrainConfig(epochs=12, optimizer="adam", lr=1e-3),
        "Fashion-MNIST (IDX files from --data-dir), LeNet-5 Caffe variant",
    )
)
register_task(
    Task(
        "fashion-resnet8x4",
        "resnet8",
        _fashion,
        TrainConfig(epochs=6, optimizer="adamw", lr=2e-3, weight_decay=5e-4, warmup_epochs=0.2),
        "Fashion-MNIST (IDX files from --data-dir), ResNet-8 at 4x width (1.2M parameters, 148M MACs), "
        "trained on a fixed 10,000-image subset",
        model_kwargs={"width": 4},
        train_subset=10_000,
    )
)
register_task(
    Task(
        "fashion-mobilenetv2",
        "mobilenetv2",
        _fashion,
        TrainConfig(epochs=6, optimizer="adamw", lr=2e-3, weight_decay=5e-4, warmup_epochs=0.2),
        "Fashion-MNIST (IDX files from --data-dir), MobileNetV2 (2.2M parameters, 73M MACs), "
        "trained on a fixed 10,000-image subset",
        train_subset=10_000,
    )
)
# The models users bring, each trained on a fixed 10,000-image subset (seconds per epoch here): the
# benchmarks of benchmarks/architectures.py hold out other training images to judge the budgets on.
register_task(
    Task(
        "mnist-row-transformer",
        "row-transformer",
        _mnist,
        TrainConfig(epochs=20, optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=1.0),
        "MNIST read row by row (28 steps of 28 pixels, IDX files from --data-dir), a 2-layer transformer "
        "encoder, trained on a fixed 10,000-image subset",
        train_subset=10_000,
    )
)
register_task(
    Task(
        "mnist-row-gru",
        "row-gru",
        _mnist,
        TrainConfig(epochs=12, optimizer="adam", lr=2e-3),
        "MNIST read row by row (IDX files from --data-dir), Conv1d front end and a GRU, trained on a fixed "
        "10,000-image subset",
        train_subset=10_000,
    )
)
register_task(
    Task(
        "mnist-mobilenetv3",
        "mobilenetv3-tiny",
        _mnist,
        TrainConfig(epochs=12, optimizer="adamw", lr=2e-3, weight_decay=5e-4, warmup_epochs=0.2),
        "MNIST (IDX files from --data-dir), a MobileNetV3-style net (depthwise, squeeze-excite, hardswish), "
        "trained on a fixed 10,000-image subset",
        train_subset=10_000,
    )
)
