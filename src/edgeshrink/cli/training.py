"""Commands that train: train (a task's baseline), compress (a recipe), distill (a smaller student)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.cli.common import DataDirOpt, QuietOpt, RecipeOpt, SeedOpt, TaskOpt, open_artifact


def _train_baseline(
    task_name: str,
    data_dir: Path | None,
    seed: int,
    epochs: int | None,
    quiet: bool,
    holdout: int | None = None,
    rewind: str | int | None = None,
):
    """(task, data, validation split, trained model, its validation accuracy, the rewind state or None). The
    validation split is `holdout` training examples held out from training, else the test split; `rewind`
    ("init" or a step) takes a lottery ticket's rewind point while training."""
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import Progress, WeightSnapshot, evaluate, fit, seed_everything

    task = load_task(task_name)
    data, val = _split(task, data_dir, holdout)
    seed_everything(seed)
    model = task.build_model()
    cfg = task.train if epochs is None else task.train.model_copy(update={"epochs": epochs})
    snapshot = None if rewind is None else WeightSnapshot(model, 0 if rewind == "init" else int(rewind))
    loader = val.loader(1000)
    after = None if snapshot is None else snapshot.after_step
    fit(
        model,
        task.train_loader(data, seed),
        cfg,
        loader,
        stage="baseline",
        progress=Progress(not quiet),
        after_step=after,
    )
    return task, data, val, model, evaluate(model, loader), None if snapshot is None else snapshot.result()


def _split(task, data_dir: Path | None, holdout: int | None):
    """(data set to train on, validation split): `holdout` training examples held out, else the test split."""
    data = task.data(data_dir)
    if holdout is None:
        return data, data.test
    return data.hold_out(holdout)


def _save_baseline(path: Path, task, model, arch: dict | None, accuracy: float) -> None:
    import torch

    from edgeshrink.architecture import Arch
    from edgeshrink.artifact import Artifact
    from edgeshrink.io import save_checkpoint

    example = torch.zeros(1, *task.input_shape)
    save_checkpoint(path, Artifact(model, Arch.parse(arch), example_input=example), accuracy)


def train(
    task: TaskOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint to write")],
    data_dir: DataDirOpt = None,
    epochs: Annotated[int | None, typer.Option(help="override the task's epochs")] = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a task's baseline model and save it as a checkpoint."""
    t, _, _, model, acc, _ = _train_baseline(task, data_dir, seed, epochs, quiet)
    _save_baseline(out, t, model, t.arch, acc)
    typer.echo(f"{t.name}: test accuracy {acc:.2f}% -> {out}")


HoldoutOpt = Annotated[
    int | None,
    typer.Option(
        "--holdout",
        help="hold out this many training examples (the same ones for the same number) as the validation split "
        "that budgets and the report measure on, instead of the test split; `edgeshrink search` does the same",
    ),
]


def compress(
    task: TaskOpt,
    recipe: RecipeOpt = "deep-compression",
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write")] = Path("runs/latest"),
    data_dir: DataDirOpt = None,
    weights: Annotated[Path | None, typer.Option(help="trained checkpoint; trains a baseline when absent")] = None,
    baseline_epochs: Annotated[int | None, typer.Option(help="epochs when training the baseline here")] = None,
    holdout: HoldoutOpt = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="fail (and write nothing) when a stage misses its accuracy budget")
    ] = False,
) -> None:
    """Compress a task's model with a recipe; writes the container, report.json and the layer table."""
    from edgeshrink.cli.summary import print_summary
    from edgeshrink.pipeline import compress as run_compress
    from edgeshrink.recipes import load_recipe
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import evaluate

    rewind = next((s.rewind for s in load_recipe(recipe).stages if getattr(s, "rewind", None) is not None), None)
    t = load_task(task)
    state = None
    if weights is None:
        t, data, val, model, acc, state = _train_baseline(task, data_dir, seed, baseline_epochs, quiet, holdout, rewind)
        _save_baseline(out / "baseline.pt", t, model, t.arch, acc)
        arch = t.arch
    else:
        data, val = _split(t, data_dir, holdout)
        _, art = open_artifact(weights, task)
        model, arch = art.model, art.arch.to_dict() or t.arch  # a student or pruned checkpoint keeps its own
        acc = evaluate(model, val.loader(1000))
    result = run_compress(
        model,
        recipe,
        train_loader=t.train_loader(data, seed),
        val_loader=val.loader(1000),
        out=out,
        seed=seed,
        arch=arch,
        progress=not quiet,
        baseline_accuracy=acc,
        strict=strict,
        rewind_weights=state,
    )
    print_summary(result.report)


def distill(
    teacher: Annotated[Path, typer.Option("--teacher", help="trained checkpoint of the task's model (the teacher)")],
    task: TaskOpt,
    student: Annotated[str, typer.Option("--student", help="zoo model to train (see `edgeshrink zoo`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="student checkpoint to write")],
    student_width: Annotated[float | None, typer.Option(help="width multiplier of the student")] = None,
    data_dir: DataDirOpt = None,
    epochs: Annotated[
        int | None, typer.Option(help="override the task's epochs (distillation gains need several times more)")
    ] = None,
    temperature: Annotated[float, typer.Option(help="softmax temperature of the soft targets")] = 4.0,
    alpha: Annotated[float, typer.Option(help="weight of the soft-target loss (1 - alpha on the labels)")] = 0.5,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a smaller zoo model from a teacher checkpoint with the distillation loss (Hinton et al.)."""
    from edgeshrink.distillation import distill_student
    from edgeshrink.models import create_model
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import DistillConfig, Progress, evaluate, seed_everything

    t = load_task(task)
    cfg = t.train.model_copy(update={"distill": DistillConfig(temperature=temperature, alpha=alpha)})
    if epochs is not None:
        cfg = cfg.model_copy(update={"epochs": epochs})
    data = t.data(data_dir)
    teacher_model = open_artifact(teacher, task)[1].model
    kwargs: dict = {"num_classes": data.num_classes}
    if student_width is not None:
        kwargs["width"] = student_width
    seed_everything(seed)
    student_model = create_model(student, input_shape=t.input_shape, **kwargs)
    test = data.test.loader(1000)
    distill_student(teacher_model, student_model, t.train_loader(data, seed), cfg, test, Progress(not quiet))
    acc, teacher_acc = evaluate(student_model, test), evaluate(teacher_model, test)
    arch = {"task": t.name, "model": student, "model_kwargs": kwargs, "input_shape": list(t.input_shape)}
    _save_baseline(out, t, student_model, arch, acc)
    params = [sum(p.numel() for p in m.parameters()) for m in (teacher_model, student_model)]
    typer.echo(
        f"{t.name}: student {student} ({params[1]:,} parameters) test accuracy {acc:.2f}%, "
        f"teacher ({params[0]:,} parameters) {teacher_acc:.2f}% -> {out}"
    )


def register(app: typer.Typer) -> None:
    for command in (train, compress, distill):
        app.command()(command)
