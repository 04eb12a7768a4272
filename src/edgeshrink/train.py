"""The built-in training loop: fit, fine-tune and evaluate, with a progress bar and seeds.

Stages never call an optimizer themselves: they ask for "n epochs of fine-tuning", which this loop
provides for the built-in tasks and for users who pass loaders. Users with their own loop pass a
`train_fn(model, epochs)` instead (see `pipeline.py`).
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeshrink.augment import is_image_batch, random_shift
from edgeshrink.batch_checks import require_batch, require_class_labels
from edgeshrink.config import Config
from edgeshrink.errors import ConfigError, TrainingDivergedError
from edgeshrink.memory_layout import LoopLayout, prepare_inputs, runs_channels_last

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class DistillConfig(Config):
    """Knowledge distillation (Hinton et al. 2015): match the teacher's soft targets at a temperature."""

    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-target loss; 1 - alpha on the labels")


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, labels).

    The T^2 factor keeps the soft-target gradients at the scale of the hard-label ones (Hinton et al.).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1 - alpha) * hard


class TrainConfig(Config):
    """How to train for a stage. Every field has a default that works for the built-in tasks."""

    epochs: int = Field(10, ge=0)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    shift: int = Field(
        0,
        ge=0,
        le=8,
        description="augmentation: every training image moved by up to this many pixels along each axis "
        "(images only: (N, C, H, W) inputs; other inputs train unshifted, and the progress says so)",
    )
    distill: DistillConfig | None = Field(None, description="learn from the uncompressed model's soft targets")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so that a run with the same seed repeats."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier at `step` of `total`: linear warm-up, then cosine decay or constant."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs for every row of `inputs` (eval mode, batched, no gradients)."""
    model.eval()
    cl = runs_channels_last(model, inputs)
    return torch.cat([model(prepare_inputs(inputs[i : i + batch_size], cl)) for i in range(0, len(inputs), batch_size)])


_TEACHER_LOGITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _state_versions(module: nn.Module) -> tuple[int, ...]:
    """Version counters of every tensor of `module`: any in-place change (a step, load_state_dict) bumps one."""
    return tuple(t._version for t in itertools.chain(module.parameters(), module.buffers()))


def teacher_logits(teacher: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The teacher's logits on `inputs`, and whether they were remembered from an earlier call. A recipe
    distils from the same frozen teacher on the same training tensor in every pruning round; the logits
    are kept (one per teacher) while neither the teacher's tensors nor the inputs changed."""
    key = (_state_versions(teacher), inputs._version)
    cached = _TEACHER_LOGITS.get(teacher)
    if cached is not None and cached[0] is inputs and cached[1] == key:
        return cached[2], True
    logits = predict(teacher, inputs)
    _TEACHER_LOGITS[teacher] = (inputs, key, logits)
    return logits, False


def _with_teacher_logits(train_batches: Batches, teacher: nn.Module, stage: str, progress: Progress) -> Batches:
    """Distillation's teacher logits: computed once for in-memory data (a loader with `with_targets`,
    such as TensorLoader), since a frozen eval-mode teacher gives the same logits for the same input
    in every epoch (and every stage): one teacher pass instead of one per epoch.
    Other loaders (augmenting ones, DataLoaders) are returned as they are; the teacher then runs per batch."""
    if not callable(getattr(train_batches, "with_targets", None)):
        return train_batches
    started = time.perf_counter()
    logits, remembered = teacher_logits(teacher, train_batches.inputs)  # type: ignore[attr-defined]
    how = "remembered" if remembered else f"{time.perf_counter() - started:.1f}s"
    progress.line(f"[{stage}] teacher logits for {len(logits):,} examples ({how})")
    return train_batches.with_targets(logits)  # type: ignore[attr-defined]


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy in percent over all batches (model put in eval mode, then restored)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in batches:
        require_batch(batch, "evaluate")
        inputs, labels = batch[0], batch[1]
        outputs = model(prepare_inputs(inputs, runs_channels_last(model, inputs)))
        require_class_labels(outputs, labels, "evaluate")
        correct += int((outputs.argmax(1) == labels).sum())
        total += int(labels.numel())
    model.train(was_training)
    return 100.0 * correct / max(1, total)


class Progress:
    """A tqdm bar on a terminal; one plain line per epoch elsewhere (CI logs, pipes)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()

    def bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(
            total=total, desc=desc, leave=False, disable=not self.interactive, dynamic_ncols=True, file=sys.stderr
        )

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


def _epoch(
    model: nn.Module,
    batches: Batches,
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[..., torch.Tensor],
    lr_at: Callable[[int], float],
    step: int,
    desc: str,
    progress: Progress,
    layout: LoopLayout,
    after_step: Callable[[], None] | None,
    shift: int = 0,
) -> tuple[float, int]:
    """One pass over `batches`: (mean loss, the step count after it), images shifted by up to `shift`."""
    model.train()
    running, seen = 0.0, 0
    with progress.bar(len(batches), desc) as bar:  # type: ignore[arg-type]
        for batch in batches:
            require_batch(batch, desc)
            inputs, labels, *targets = batch
            inputs = layout.batch(random_shift(inputs, shift) if shift and is_image_batch(inputs) else inputs)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(inputs, labels, targets)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"{desc}: the loss became {float(loss.detach())} at step {step + 1}; training diverged. "
                    f"Lower the learning rate (now {lr_at(step):g}) or add warmup_epochs"
                )
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
            step += 1
            running += float(loss.detach()) * len(labels)
            seen += len(labels)
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.4f}")
    return running / max(1, seen), step


def _batch_loss(
    model: nn.Module,
    cfg: TrainConfig,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None,
    teacher: nn.Module | None,
) -> Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor]], torch.Tensor]:
    """The loss of one batch: distillation against `teacher` (its logits precomputed as the batch's third
    element when the data is in memory), else `loss_fn`, else cross-entropy."""
    distill = cfg.distill
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def batch_loss(inputs: torch.Tensor, labels: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
        if loss_fn is not None and distill is None:
            return loss_fn(model, inputs, labels)
        outputs = model(inputs)
        require_class_labels(outputs, labels, "training (cross-entropy)")
        labels = labels.long()  # cross-entropy takes int64 (or uint8) class indices, not int32
        if distill is None:
            return criterion(outputs, labels)
        if targets:
            teacher_logits = targets[0]
        else:
            with torch.no_grad():
                teacher_logits = teacher(inputs)  # type: ignore[misc]
        return distillation_loss(outputs, teacher_logits, labels, distill.temperature, distill.alpha)

    return batch_loss


def fit(
    model: nn.Module,
    train_batches: Batches,
    cfg: TrainConfig,
    val_batches: Batches | None = None,
    *,
    stage: str = "train",
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: Progress | None = None,
    after_step: Callable[[], None] | None = None,
    after_epoch: Callable[[dict], None] | None = None,
    teacher: nn.Module | None = None,
) -> list[dict]:
    """Train `model` for `cfg.epochs` epochs; returns one record per epoch (loss, val accuracy, seconds).

    `loss_fn(model, inputs, labels)` replaces cross-entropy; with `cfg.distill` the loss is the
    distillation loss against `teacher` (its logits computed once when the batches are in memory).
    `after_step` runs after every optimizer step, `after_epoch(record)` after every epoch (a search stops
    an unpromising trial there by raising). Conv nets train in channels-last memory where their forward allows
    it (memory_layout.py) and are handed back in the standard layout (so the trained model computes exactly as
    a fresh one loaded with the same tensors).
    """
    progress = progress or Progress()
    if cfg.epochs == 0:
        return []
    if cfg.distill is not None:
        if teacher is None:
            raise ConfigError(f"{stage}: distill needs a teacher model; none was given")
        teacher.eval()
        if not cfg.shift:  # shifted images need the teacher's logits on what the student sees
            train_batches = _with_teacher_logits(train_batches, teacher, stage, progress)
    shift = _image_shift(train_batches, cfg.shift, stage, progress)
    batch_loss = _batch_loss(model, cfg, loss_fn, teacher)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps_per_epoch = len(train_batches)  # type: ignore[arg-type]
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        return cfg.lr * lr_factor(step, total, warmup, cfg.schedule)

    layout = LoopLayout(model, teacher if cfg.distill is not None else None)
    history: list[dict] = []
    step = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            desc = f"{stage} epoch {epoch}/{cfg.epochs}"
            loss, step = _epoch(
                model, train_batches, optimizer, batch_loss, lr_at, step, desc, progress, layout, after_step, shift
            )
            _require_finite_weights(model, desc, lr_at(step - 1))
            record = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - started}
            if val_batches is not None:
                record["val_accuracy"] = evaluate(model, val_batches)
            history.append(record)
            acc = f", val acc {record['val_accuracy']:.2f}%" if "val_accuracy" in record else ""
            progress.line(f"[{desc}] loss {record['loss']:.4f}{acc} ({record['seconds']:.1f}s)")
            if after_epoch is not None:
                after_epoch(record)
    finally:
        layout.restore()
    model.eval()
    return history


def _require_finite_weights(model: nn.Module, desc: str, lr: float) -> None:
    """TrainingDivergedError when a step left a weight nan or inf: an infinite gradient (sqrt at 0) ruins the
    weights while the loss of that step was still finite, so the loss check alone misses the last step."""
    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise TrainingDivergedError(
                f"{desc}: {name} became nan or inf (an infinite gradient, e.g. sqrt or log at 0 in forward()); "
                f"training diverged. Lower the learning rate (now {lr:g}) or keep the op's input away from 0"
            )


def _image_shift(train_batches: Batches, shift: int, stage: str, progress: Progress) -> int:
    """`shift`, or 0 (and a progress line saying so) when the in-memory training inputs are not images. Other
    loaders are not peeked at (that would advance their shuffling): each batch is checked as it comes."""
    inputs = getattr(train_batches, "inputs", None)
    if not shift or not isinstance(inputs, torch.Tensor) or is_image_batch(inputs):
        return shift
    progress.line(f"[{stage}] shift: inputs of shape {tuple(inputs.shape)} are not images (N, C, H, W); unshifted")
    return 0


class WeightSnapshot:
    """The model's state dict after training step `step` (0: before the first step), taken while it trains
    (`fit(after_step=snapshot.after_step)`): the point a lottery ticket rewinds to."""

    def __init__(self, model: nn.Module, step: int) -> None:
        if step < 0:
            raise ConfigError(f"a rewind step must be >= 0, got {step}")
        self.model, self.step, self.seen = model, step, 0
        self.state: dict[str, torch.Tensor] | None = self._copy() if step == 0 else None

    def _copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()}

    def after_step(self) -> None:
        self.seen += 1
        if self.seen == self.step:
            self.state = self._copy()

    def result(self) -> dict[str, torch.Tensor]:
        """The snapshot; ConfigError when training ended before the step."""
        if self.state is None:
            raise ConfigError(
                f"the recipe rewinds to training step {self.step} but the baseline trained {self.seen} steps: "
                "choose a smaller `rewind`"
            )
        return self.state
