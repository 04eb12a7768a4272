"""What the built-in training loop and top-1 evaluation accept: (inputs, labels) batches with one input tensor,
and one integer class label per output row. Anything else is a one-line ConfigError naming the fix, before a
stage fails deep inside or, worse, reports a number that means nothing."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from edgeshrink.errors import ConfigError


def require_batch(batch: object, where: str) -> None:
    """ConfigError unless `batch` is an (inputs, labels[, targets]) pair with one input tensor: a dict batch
    or a model with several inputs would otherwise fail deep inside a stage."""
    if isinstance(batch, Mapping):
        keys = ", ".join(map(str, list(batch)[:4]))
        raise ConfigError(
            f"{where}: a batch is a dict (keys {keys}); edgeshrink takes (inputs, labels) pairs: wrap the "
            "loader, e.g. [(b['x'], b['y']) for b in loader]"
        )
    if not isinstance(batch, tuple | list) or len(batch) < 2:
        raise ConfigError(f"{where}: a batch must be an (inputs, labels) pair; got {type(batch).__name__}")
    if not isinstance(batch[0], torch.Tensor):
        raise ConfigError(
            f"{where}: a batch's inputs are a {type(batch[0]).__name__}, not one tensor; edgeshrink compresses "
            "models that take one input tensor: wrap the model so it takes one (stack or concatenate the inputs)"
        )
    if not isinstance(batch[1], torch.Tensor):
        raise ConfigError(f"{where}: a batch's labels are a {type(batch[1]).__name__}, not a tensor")


def require_class_labels(outputs: torch.Tensor, labels: torch.Tensor, where: str) -> None:
    """ConfigError unless `labels` hold one integer class per output row (per pixel for (N, C, H, W) maps),
    each below the output's class count: top-1 and cross-entropy on regression targets or embeddings would
    give a number that means nothing (a float target of shape (N, 1) broadcasts against (N,) predictions)."""
    require_tensor_output(outputs, where)
    classes = outputs.shape[1] if outputs.dim() > 1 else 0
    bad = labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    if not bad and tuple(labels.shape) == (outputs.shape[0], *outputs.shape[2:]) and classes:
        if labels.numel() == 0 or (int(labels.min()) >= 0 and int(labels.max()) < classes):
            return
    raise ConfigError(
        f"{where}: top-1 accuracy and cross-entropy need integer class labels in [0, {classes}), one per output "
        f"row; got {str(labels.dtype).removeprefix('torch.')} labels of shape {tuple(labels.shape)} for outputs of "
        f"shape {tuple(outputs.shape)}. For a model that is not a classifier (regression, embeddings) pass "
        "eval_fn=<your metric, higher is better> and train_fn=<your training loop> instead of the loaders"
    )


def require_tensor_output(outputs: object, where: str = "") -> None:
    """ConfigError unless the model returned one tensor: evaluation, parity checks and every exported file read one
    output, and which element of a (logits, features) tuple or a {"logits": ...} dict to keep is the user's to say."""
    if isinstance(outputs, torch.Tensor):
        return
    sized = isinstance(outputs, tuple | list | dict)
    what = f"a {type(outputs).__name__}" + (f" of {len(outputs)} outputs" if sized else "")  # type: ignore[arg-type]
    raise ConfigError(
        f"{where + ': ' if where else ''}the model returns {what}, not one tensor; edgeshrink compresses, measures "
        "and exports models with one output: wrap it in a module whose forward returns the tensor to keep (the "
        "logits, the embedding)"
    )
