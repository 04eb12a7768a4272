"""`edgeshrink bench`: several artifacts across runtimes, one table, bench.json and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.cli.common import DataDirOpt


def bench(
    artifacts: Annotated[
        list[Path] | None,
        typer.Argument(help="checkpoints, run folders, .eshrink containers, .onnx / .tflite files"),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="task (default: the one the files record)")] = None,
    data_dir: DataDirOpt = None,
    runtimes: Annotated[
        str | None, typer.Option(help="comma list of onnxruntime, litert, tflm, executorch (default: all installed)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="device for the energy estimate (`edgeshrink devices`)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for bench.json, report.html, files/")] = Path(
        "runs/bench"
    ),
    windows: Annotated[int, typer.Option(help="timed windows per file")] = 5,
    window_ms: Annotated[float, typer.Option(help="minimum length of a timed window")] = 200.0,
    threads: Annotated[int, typer.Option(help="runtime threads (TFLite Micro: always 1)")] = 2,
    examples: Annotated[int, typer.Option(help="test examples for accuracy (0: the whole test split)")] = 0,
    zoo: Annotated[bool, typer.Option(help="also train (or load cached) the zoo's efficient models on --task")] = False,
    zoo_epochs: Annotated[int | None, typer.Option(help="--zoo: epochs per model (default: the task's)")] = None,
    zoo_models: Annotated[str | None, typer.Option(help="--zoo: comma list of zoo models (default: all six)")] = None,
) -> None:
    """Compare models across runtimes: accuracy from each runtime, bytes, peak memory, batch-1 latency (timed
    windows, median), MACs and energy; the accuracy-vs-latency Pareto front is marked *."""
    from edgeshrink.benchmark.protocol import Protocol
    from edgeshrink.benchmark.report import HEADER, table_rows
    from edgeshrink.benchmark.run import bench as run_bench

    result = run_bench(
        artifacts or [],
        task=task,
        data_dir=data_dir,
        runtimes=runtimes,
        device=device,
        out=out,
        protocol=Protocol(windows=windows, window_s=window_ms / 1e3),
        threads=threads,
        examples=examples,
        zoo=zoo,
        zoo_epochs=zoo_epochs,
        zoo_models=[m.strip() for m in zoo_models.split(",")] if zoo_models else None,
    )
    _print(HEADER, table_rows(result))
    for skip in result.skipped:
        typer.echo(f"not run: {Path(skip['artifact']).name} in {skip['runtime']}: {skip['reason']}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {out / 'bench.json'}, {out / 'report.html'}")


def _print(header: list[str], rows: list[list[str]]) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table()
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 3 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def register(app: typer.Typer) -> None:
    app.command()(bench)
