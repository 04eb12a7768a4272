"""Commands that list what is built in: tasks, recipes, the model zoo, export formats."""

from __future__ import annotations

from typing import Annotated

import typer


def tasks() -> None:
    """List the built-in tasks."""
    from edgeshrink.tasks.registry import list_tasks, load_task

    for name in list_tasks():
        typer.echo(f"{name:20s} {load_task(name).description}")


def recipes() -> None:
    """List the built-in recipes."""
    from edgeshrink.recipes import list_recipes

    for name, description in list_recipes().items():
        typer.echo(f"{name:20s} {description}")


def formats() -> None:
    """List the export formats (the exporter registry) and the runtime each is verified in."""
    from edgeshrink.exporters.base import get_exporter, list_exporters

    for name in list_exporters():
        e = get_exporter(name)
        typer.echo(f"{name:8s} {e.runtime:14s} {e.description}")


def zoo(names: Annotated[list[str] | None, typer.Argument(help="models to list (default: all)")] = None) -> None:
    """List the zoo's architectures: input shapes, parameters and MACs (one forward pass, batch 1)."""
    from edgeshrink.mac_count import count_macs
    from edgeshrink.models import create_model, list_models, model_entry

    typer.echo(f"{'model':14s} {'input':10s} {'parameters':>11s} {'MACs':>13s}  description")
    for name in names or list_models():
        entry = model_entry(name)
        for shape in entry.shapes():
            model = create_model(name, input_shape=shape)
            params = sum(p.numel() for p in model.parameters())
            dims = "x".join(map(str, shape))
            typer.echo(f"{name:14s} {dims:10s} {params:11,d} {count_macs(model, shape):13,d}  {entry.description}")
    typer.echo("options: width= on families with a width multiplier; MACs: edgeshrink.mac_count's per-op rules")


def register(app: typer.Typer) -> None:
    for command in (tasks, recipes, formats, zoo):
        app.command()(command)
