"""What the commands share: option types, and turning a file plus --task / --model into a task and an
artifact (always through `edgeshrink.io`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.errors import ConfigError

TaskOpt = Annotated[str, typer.Option("--task", "-t", help="built-in task (see `edgeshrink tasks`)")]
FileTaskOpt = Annotated[str | None, typer.Option("--task", "-t", help="task (default: the one the file records)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", "-d", help="folder with the task's data files")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed (training order, initialisation, k-means)")]
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="built-in recipe name or a .toml file")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="zoo model, for files that do not record it")]
DevicesDirOpt = Annotated[
    Path | None, typer.Option("--devices-dir", help="folder with your own device files (also $EDGESHRINK_DEVICES)")
]


def check_task(arch_task: str | None, task: str, source: str) -> None:
    """ConfigError when a file made for one task is used with another task's (different) model."""
    if arch_task and arch_task != task:
        from edgeshrink.tasks.registry import load_task

        if load_task(arch_task).model != load_task(task).model:
            raise ConfigError(f"{source} was made for task {arch_task!r}, not {task!r}: pass --task {arch_task}")


def open_artifact(path: Path, task_name: str | None = None, model_name: str | None = None, need_task: bool = False):
    """(task or None, Artifact) of a run folder, container or checkpoint.

    The architecture comes from the file; `--model` names a zoo model for files that record none, and a
    file that records only its task is rebuilt from that task's model."""
    from edgeshrink.io import read_stored, to_artifact
    from edgeshrink.tasks.registry import load_task

    stored = read_stored(path)
    name = task_name or stored.arch.task
    if need_task and not name:
        raise ConfigError(f"{path} does not record its task: pass --task")
    task = load_task(name) if name else None
    if task is not None:
        check_task(stored.arch.task, task.name, str(path))
    fresh = None
    if model_name is not None:
        from edgeshrink.models import create_model

        fresh = create_model(model_name)
    elif stored.arch.model is None and task is not None:
        fresh = task.build_model()
    elif stored.arch.model is None:
        from edgeshrink.models import list_models

        raise ConfigError(f"{path} does not record its architecture: pass --model (one of {', '.join(list_models())})")
    from edgeshrink.api.inputs import with_zoo_name

    art = with_zoo_name(to_artifact(stored, fresh), model_name)
    if path.is_dir():
        art = art.replace(kind="run-folder", path=path)
    return task, art
