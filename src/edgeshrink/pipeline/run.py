"""`compress`: run a recipe's stages on a model, write the container, prove it decodes, report.

Works on any `nn.Module`: the built-in tasks only supply a model, loaders and a training setup.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact, require_one_output
from edgeshrink.encode.container import state_to_bytes
from edgeshrink.errors import BudgetError
from edgeshrink.files import atomic_write
from edgeshrink.io import CONTAINER_NAME, REPORT_NAME, header_meta, save
from edgeshrink.io.storage import storage_state
from edgeshrink.pipeline.budget import recipe_budget, with_remaining_budget
from edgeshrink.pipeline.checks import check_recipe
from edgeshrink.pipeline.context import frozen_teacher, make_context
from edgeshrink.pipeline.log import RunLog
from edgeshrink.pipeline.verify import check_written
from edgeshrink.recipes import Recipe, load_recipe
from edgeshrink.reparametrizations import folded_copy
from edgeshrink.report.layers import to_markdown
from edgeshrink.report.run import run_report
from edgeshrink.scope import select_layers
from edgeshrink.stages.base import StageContext, apply_stage
from edgeshrink.train import Progress, seed_everything

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CompressResult:
    """The compressed artifact (its model has masks, codebooks or quantizers attached), the report (a
    dict, also report.json), the container path and the run folder."""

    model: nn.Module
    report: dict
    path: Path
    out_dir: Path
    artifact: Artifact


def _fixed_width_twin(artifact: Artifact, packed) -> object:
    """The same tensors with the index widths of the shipped file, fixed-width codes (the P+Q columns)."""
    state, represents = storage_state(artifact)
    widths = {t.name: t.index_width or 1 for t in packed.tensors}
    return state_to_bytes(
        state,
        coding="fixed",
        index_bits=lambda name: widths[name],
        arch=artifact.arch.to_dict(),
        meta=header_meta(artifact),
        represents=represents,
    )


def _run_stages(artifact: Artifact, recipe: Recipe, ctx: StageContext, log: RunLog, strict: bool) -> Artifact:
    """The recipe's stages in order, each logged and given what is left of the recipe's accuracy budget;
    with `strict`, a missed budget (a stage's or the recipe's) stops the run before anything is written."""
    baseline = current = log.baseline["accuracy"]
    for i, cfg in enumerate(recipe.stages, 1):
        ctx.progress.line(f"stage {i}/{len(recipe.stages)}: {cfg.type}")
        artifact = apply_stage(artifact, with_remaining_budget(cfg, recipe.max_accuracy_drop, baseline, current), ctx)
        record = artifact.records[-1]
        if strict and record.budget_met is False:
            raise BudgetError(f"recipe {recipe.name!r}, stage {i} ({cfg.type}): {record.notes[-1]} (strict)")
        current = record.accuracy if record.accuracy is not None else current
        log.after_stage(artifact)
    final = artifact.records[-1].accuracy if artifact.records else baseline
    log.budget = recipe_budget(recipe.max_accuracy_drop, baseline, final)
    if log.budget is not None:
        ctx.progress.line(log.budget["note"])
        if strict and log.budget["met"] is False:
            raise BudgetError(f"recipe {recipe.name!r}: {log.budget['note']} (strict)")
    return artifact


def _write_run(
    artifact: Artifact,
    recipe: Recipe,
    ctx: StageContext,
    log: RunLog,
    model: nn.Module,
    edits: int,
    out_dir: Path,
    batch,
) -> CompressResult:
    """Save the container, prove it decodes to what was evaluated (`model` carries the first `edits` channel edits
    already), and write report.json and layers.md."""
    packed = save(artifact, out_dir / CONTAINER_NAME, recipe.encode)
    try:
        loaded = check_written(packed.path, artifact, copy.deepcopy(model).eval(), edits, batch)
    except BaseException:
        packed.path.unlink(missing_ok=True)  # a file that does not decode to what was evaluated is not left behind
        raise
    weight_names = [f"{n}.weight" for n, _ in select_layers(artifact.model, None, "report")]
    fixed = _fixed_width_twin(artifact, packed)
    report = run_report(recipe, artifact, log, packed, fixed, weight_names, ctx.accuracy(loaded.model))
    atomic_write(out_dir / REPORT_NAME, json.dumps(report, indent=2).encode())
    atomic_write(out_dir / "layers.md", to_markdown(report["layers"]).encode())
    return CompressResult(artifact.model, report, packed.path, out_dir, artifact)


def compress(
    model: nn.Module,
    recipe: str | Path | Recipe | dict = "deep-compression",
    *,
    train_loader: Batches | None = None,
    val_loader: Batches | None = None,
    train_fn: Callable[[nn.Module, int], object] | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    out: str | Path = "runs/compressed",
    seed: int = 0,
    arch: Arch | dict | None = None,
    progress: bool = True,
    baseline_accuracy: float | None = None,
    calibration_loader: Batches | None = None,
    strict: bool = False,
    rewind_weights: Mapping[str, torch.Tensor] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> CompressResult:
    """Compress a trained `model` with a recipe (a built-in name, a TOML path or a `Recipe`).

    Fine-tuning uses `train_loader` with the built-in loop, or your `train_fn(model, epochs)`.
    Accuracy is measured with `eval_fn(model) -> percent`, or top-1 on `val_loader`. The input model
    is left untouched. Quantization calibrates on `calibration_loader` (default: `train_loader`, else
    `val_loader`). Every scope of the recipe is checked against the model before the first stage runs.
    Writes `out/model.eshrink`, `out/report.json` and `out/layers.md`. With `strict`, a stage that
    (or a run) that misses its accuracy budget (`max_accuracy_drop`) is an error; nothing is written.
    `rewind_weights`: the state dict a prune stage with `rewind` resets the kept weights to (the model's
    weights at initialisation, or after the training step the stage names: lottery tickets).
    `on_epoch(record)` is called after every fine-tuning epoch of the built-in loop (record: stage, epoch,
    loss, val accuracy); an exception it raises stops the run with nothing written.
    """
    recipe = load_recipe(recipe)
    model, rewind_weights, folded = folded_copy(model, rewind_weights)  # weight_norm: plain weights
    check_recipe(recipe, model, rewind_weights)
    bar = Progress(progress)
    seed_everything(seed)
    ctx = make_context(
        train_loader=train_loader,
        val_loader=val_loader,
        train_fn=train_fn,
        eval_fn=eval_fn,
        calibration_loader=calibration_loader,
        progress=bar,
        teacher=frozen_teacher(model),
        seed=seed,
        on_epoch=on_epoch,
        rewind_weights=rewind_weights,
    )
    require_one_output(model, ctx.example_input)
    arch = Arch.parse(arch)
    artifact = Artifact(
        copy.deepcopy(model).eval(), arch, example_input=ctx.example_input, meta={"recipe": recipe.name, "seed": seed}
    )
    accuracy = baseline_accuracy if baseline_accuracy is not None else ctx.accuracy(artifact.model)
    log = RunLog(artifact, recipe.encode, accuracy, bar, folded)
    artifact = _run_stages(artifact, recipe, ctx, log, strict)
    batch = ctx.example_input if val_loader is None else next(iter(val_loader))[0]
    return _write_run(artifact, recipe, ctx, log, model, arch.edit_count, Path(out), batch)
