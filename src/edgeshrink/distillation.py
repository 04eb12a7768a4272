"""Teacher -> student distillation (Hinton et al. 2015): train a smaller architecture on a trained
model's soft targets, mixed with the labels.

The loss is `train.distillation_loss`; any stage's fine-tuning can use it too (`TrainConfig.distill`,
with the uncompressed model as teacher). This module trains a *different* architecture, e.g. a zoo
model at a smaller width, from a teacher checkpoint.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeshrink.errors import ConfigError
from edgeshrink.train import Batches, DistillConfig, Progress, TrainConfig, fit


def distill_student(
    teacher: nn.Module,
    student: nn.Module,
    train_loader: Batches,
    cfg: TrainConfig,
    val_loader: Batches | None = None,
    progress: Progress | None = None,
) -> list[dict]:
    """Train `student` in place from `teacher`'s soft targets; returns the per-epoch history.

    `cfg.distill` sets temperature and soft-target weight (default: T = 4, alpha = 0.5). The teacher
    is copied and frozen; it is never modified.
    """
    if cfg.distill is None:
        cfg = cfg.model_copy(update={"distill": DistillConfig()})
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    inputs, _ = next(iter(train_loader))
    with torch.no_grad():
        t_shape, s_shape = teacher(inputs[:2]).shape, student.eval()(inputs[:2]).shape
    if t_shape != s_shape:
        raise ConfigError(
            f"the student outputs {tuple(s_shape)} but the teacher {tuple(t_shape)}: "
            "build the student with the teacher's number of classes (num_classes=)"
        )
    return fit(student, train_loader, cfg, val_loader, stage="distill", progress=progress, teacher=teacher)
