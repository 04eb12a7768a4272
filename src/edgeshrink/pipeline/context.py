"""What `compress` hands every stage: how to fine-tune, how to evaluate, data examples, progress."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from edgeshrink.batch_checks import require_batch
from edgeshrink.errors import ConfigError, TrainingDivergedError
from edgeshrink.stages.base import StageContext
from edgeshrink.train import Progress, TrainConfig, evaluate, fit

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
RETRIES = 3  # halvings of the learning rate after a fine-tune diverges
NO_DISTILL = (
    "not applied: fine-tuned with your train_fn and its own loss (distillation from the uncompressed model "
    "runs in the built-in loop, with train_loader=)"
)


def fit_backing_off(
    model: nn.Module, cfg: TrainConfig, fit_once: Callable[[TrainConfig], list[dict]], label: str, progress: Progress
) -> list[dict]:
    """`fit_once(cfg)`; when its loss diverges, the weights from before it and the learning rate halved, up to
    RETRIES times. A recipe's learning rate suits the baselines it was chosen on: one trained to a higher
    loss (less overfit, augmented) has larger gradients, and SGD at the same rate can blow up in the first
    steps. Epoch records of a retried fine-tune carry the rate it ran at and the ones that diverged."""
    state = copy.deepcopy(model.state_dict())
    diverged: list[float] = []
    lr = cfg.lr
    while True:
        try:
            history = fit_once(cfg.model_copy(update={"lr": lr}))
        except TrainingDivergedError as exc:
            model.load_state_dict(state)
            diverged.append(lr)
            if len(diverged) > RETRIES:
                rates = ", ".join(f"{x:g}" for x in diverged)
                raise TrainingDivergedError(f"{exc} (diverged at learning rates {rates}; weights restored)") from exc
            lr /= 2
            restart = f"weights restored; again at {lr:g}"
            progress.line(f"[{label}] the loss diverged at learning rate {diverged[-1]:g}: {restart}")
            continue
        return [{**record, "lr": lr, "diverged_at_lr": diverged} for record in history] if diverged else history


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A copy of the uncompressed model, for stages that distil from it."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _finetuner(
    train_loader: Batches | None,
    val_loader: Batches | None,
    train_fn: Callable[[nn.Module, int], object] | None,
    progress: Progress,
    teacher: nn.Module,
    on_epoch: Callable[[dict], None] | None = None,
) -> Callable[[nn.Module, TrainConfig, str], list[dict]] | None:
    if train_fn is not None and train_loader is not None:
        raise ConfigError("pass either train_loader= or train_fn=, not both")
    if train_fn is not None:

        def run_user(model: nn.Module, cfg: TrainConfig, label: str) -> list[dict]:
            record = {"epochs": cfg.epochs, "train_fn": getattr(train_fn, "__name__", "train_fn")}
            if cfg.distill is not None:  # the user's loop has its own loss (a regression, an embedding)
                record["distill"] = NO_DISTILL
                progress.line(f"[{label}] {NO_DISTILL}")
            progress.line(f"[{label}] {cfg.epochs} epoch(s) with your train_fn")
            train_fn(model, cfg.epochs)
            return [record]

        return run_user
    if train_loader is not None:

        def run_builtin(model: nn.Module, cfg: TrainConfig, label: str) -> list[dict]:
            after = None if on_epoch is None else (lambda record: on_epoch({"stage": label, **record}))

            def fit_once(config: TrainConfig) -> list[dict]:
                return fit(
                    model,
                    train_loader,
                    config,
                    val_loader,
                    stage=label,
                    progress=progress,
                    teacher=teacher,
                    after_epoch=after,
                )

            return fit_backing_off(model, cfg, fit_once, label, progress)

        return run_builtin
    return None


def _require_reiterable(name: str, batches: Batches, needs_len: bool = False) -> None:
    """ConfigError for a one-shot iterator (a generator: empty after the first pass) and, for the loader
    fine-tuning runs on, one without a length (the schedule and progress count its batches)."""
    if isinstance(batches, Iterator):  # not iter(batches): a DataLoader's iter() draws from the global RNG
        raise ConfigError(
            f"{name} is a one-shot iterator ({type(batches).__name__}), empty after one pass: pass a list of "
            "(inputs, labels) batches or a torch DataLoader"
        )
    if needs_len:
        try:
            len(batches)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError(
                f"{name} has no length ({type(batches).__name__}): fine-tuning counts its batches per epoch; "
                "pass a list of batches or a DataLoader over a map-style Dataset"
            ) from None


def _first_batch(name: str, batches: Batches) -> tuple:
    """The first batch of a loader compress reads before any work (the example input), checked."""
    _require_reiterable(name, batches)
    first = next(iter(batches), None)
    if first is None:
        raise ConfigError(f"{name} yields no batches: pass at least one (inputs, labels) batch")
    require_batch(first, name)
    return first


def make_context(
    *,
    train_loader: Batches | None,
    val_loader: Batches | None,
    train_fn: Callable[[nn.Module, int], object] | None,
    eval_fn: Callable[[nn.Module], float] | None,
    calibration_loader: Batches | None,
    progress: Progress,
    teacher: nn.Module,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    rewind_weights: Mapping[str, torch.Tensor] | None = None,
) -> StageContext:
    """The stage context of one compress run. The example input comes from the validation data (or the
    calibration data): drawing from train_loader would change its shuffling."""
    if eval_fn is None and val_loader is not None:

        def eval_fn(m: nn.Module) -> float:
            return evaluate(m, val_loader)

    if train_loader is not None:
        _require_reiterable("train_loader", train_loader, needs_len=True)
    # the first loader only: drawing a batch advances a shuffling loader's generator
    loaders = (("val_loader", val_loader), ("calibration_loader", calibration_loader))
    named = next(((name, b) for name, b in loaders if b is not None), None)
    first = None if named is None else _first_batch(*named)
    source = train_loader if train_loader is not None else val_loader
    return StageContext(
        finetune=_finetuner(train_loader, val_loader, train_fn, progress, teacher, on_epoch),
        evaluate=eval_fn,
        progress=progress,
        seed=seed,
        example_input=None if first is None else first[0][:1],
        batches=None if source is None else (lambda n: list(itertools.islice(iter(source), n))),
        calibration=next((b for b in (calibration_loader, train_loader, val_loader) if b is not None), None),
        rewind_weights=None if rewind_weights is None else dict(rewind_weights),
    )
