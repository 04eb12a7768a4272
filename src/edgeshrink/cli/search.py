"""`edgeshrink search`: the most accurate compressed models (or architectures) that fit a device, with Optuna, on one
machine or several sharing a study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.cli.common import DataDirOpt, QuietOpt, SeedOpt, TaskOpt


def _comma(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


Opt = typer.Option
DeviceOpt = Annotated[str, Opt(help="target device (`edgeshrink devices`): its flash and RAM are constraints")]
LatencyOpt = Annotated[float | None, Opt(help="the estimated latency on the device must stay below this")]
DropOpt = Annotated[float | None, Opt(help="points below the baseline's validation accuracy a candidate may lose")]
TrialsOpt = Annotated[int, Opt(help="finished trials the study should hold (0: only write the report)")]
TimeoutOpt = Annotated[float | None, Opt(help="stop this worker after this many seconds")]
StudyOpt = Annotated[str, Opt(help="study name: workers with the same name and storage share it")]
StorageOpt = Annotated[
    str | None, Opt(help="journal:PATH, sqlite:///PATH or postgresql://USER:PW@HOST/DB (default: a journal in --out)")
]
OutOpt = Annotated[Path, Opt("--out", "-o", help="folder: trials/, front/, search.json, report.html")]
StagesOpt = Annotated[str | None, Opt(help="recipe search: comma list of stages (default: what pays on the device)")]
FamilyOpt = Annotated[str | None, Opt(help="architecture search over a zoo family (ds-cnn, mobilenetv2, resnet8)")]
ObjectivesOpt = Annotated[str, Opt(help="accuracy plus bytes and/or latency; accuracy alone: successive halving")]
EpochsOpt = Annotated[int, Opt(help="recipe: most fine-tuning epochs per training run; family: training epochs")]
ReferenceOpt = Annotated[str, Opt(help="built-in recipe run once for comparison ('none': no reference)")]
WeightsOpt = Annotated[Path | None, Opt(help="trained baseline checkpoint (default: trained here, saved to --out)")]
HoldoutOpt = Annotated[
    int | None, Opt(help="training examples held out as the validation split chosen on (default: a fifth, <= 5000)")
]


def search(
    task: TaskOpt,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "cortex-m7",
    latency_budget_ms: LatencyOpt = None,
    max_accuracy_drop: DropOpt = None,
    trials: TrialsOpt = 20,
    timeout: TimeoutOpt = None,
    study: StudyOpt = "edgeshrink",
    storage: StorageOpt = None,
    out: OutOpt = Path("runs/search"),
    stages: StagesOpt = None,
    family: FamilyOpt = None,
    objectives: ObjectivesOpt = "accuracy,bytes",
    sampler: Annotated[str, Opt(help="tpe, nsga2 or random")] = "tpe",
    max_epochs: EpochsOpt = 3,
    per_layer: Annotated[bool, Opt(help="search sparsity and bits per layer (else one value / per kind)")] = True,
    reference: ReferenceOpt = "deep-compression",
    weights: WeightsOpt = None,
    holdout: HoldoutOpt = None,
    threads: Annotated[int, Opt(help="torch and runtime threads of this worker (0: torch's default)")] = 0,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Search recipes (or a zoo family's architectures) for the most accurate models that fit a device: the
    Pareto front of accuracy against deployable bytes (or latency), a recipe TOML per front point, report.html."""
    import torch

    from edgeshrink.autosearch.report import HEADER, row
    from edgeshrink.autosearch.run import search as run_search

    if threads:
        torch.set_num_threads(threads)
    result = run_search(
        task=task, data_dir=data_dir, weights=weights, device=device, stages=_comma(stages), family=family,
        objectives=tuple(_comma(objectives) or ()), latency_budget_ms=latency_budget_ms,
        max_accuracy_drop=max_accuracy_drop, trials=trials, timeout=timeout, study=study, storage=storage, out=out,
        sampler=sampler, max_epochs=max_epochs, per_layer=per_layer,
        reference=None if reference == "none" else reference, holdout=holdout, seed=seed,
        threads=threads or torch.get_num_threads(), progress=not quiet,
    )  # fmt: skip
    from edgeshrink.cli.bench import _print

    rows = [row(c) for c in result.front]
    if result.reference is not None:
        rows.append(row(result.reference, f"{result.summary['reference_name']} (built-in)"))
    _print(HEADER, rows)
    for line in result.summary["comparison"]:
        typer.echo(line)
    typer.echo(f"front recipes: {', '.join(result.files.values()) or 'none (no candidate fits the device)'}")
    typer.echo(f"wrote {', '.join(result.paths)}")


def register(app: typer.Typer) -> None:
    app.command()(search)
