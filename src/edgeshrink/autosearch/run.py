"""`edgeshrink.search`: the most accurate models that fit a device, found with Optuna over recipes (each registered
stage's declared space) or over a zoo family's architectures, on one machine or many."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeshrink.autosearch.builders import architecture_builder, recipe_builder, reference_candidate
from edgeshrink.autosearch.candidate import Candidate, Evaluator
from edgeshrink.autosearch.front import candidates, dominating, pareto, write_front_files
from edgeshrink.autosearch.report import write_outputs
from edgeshrink.autosearch.setup import task_baseline, task_data, user_baseline, user_data
from edgeshrink.autosearch.space import check_stages, default_stages
from edgeshrink.autosearch.spec import SAMPLERS, SearchSpec, fingerprint
from edgeshrink.autosearch.storage import default_storage, describe, open_storage
from edgeshrink.autosearch.study import finished, open_study, run_worker
from edgeshrink.devices.catalogue import get_device
from edgeshrink.environment import cpu_model
from edgeshrink.errors import ConfigError
from edgeshrink.train import Progress

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class SearchResult:
    """Every measured candidate, the Pareto front (feasible candidates), the built-in recipe's result, the files
    written (front recipes, search.json, report.html) and a summary."""

    candidates: list[Candidate]
    front: list[Candidate]
    reference: Candidate | None
    files: dict[int, str]
    summary: dict
    out: Path
    spec: SearchSpec
    paths: list[str] = field(default_factory=list)

    def with_paths(self, paths: Iterable[Path]) -> SearchResult:
        self.paths = [str(p) for p in paths]
        return self

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "summary": self.summary,
            "front": [c.to_dict() for c in self.front],
            "front_files": {str(k): v for k, v in self.files.items()},
            "reference": None if self.reference is None else self.reference.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def _comparison(front: list[Candidate], reference: Candidate | None, name: str | None, cost: str) -> list[str]:
    if reference is None or cost == "accuracy":
        return []
    better = dominating(front, reference, cost)
    ref = f"{name} ({reference.deployable['bytes']:,} B, test {reference.test_accuracy}%)"
    if not better:
        return [f"no front point dominates {ref}: none is smaller ({cost}) at equal or better accuracy"]
    best = min(better, key=lambda c: c.value(cost))
    return [
        f"{len(better)} front point(s) dominate {ref}; the smallest, trial {best.number}: "
        f"{best.deployable['bytes']:,} B ({best.deployable['bytes'] / reference.deployable['bytes']:.2f}x), "
        f"test {best.test_accuracy}%"
    ]


def _reproduce(front: list[Candidate], task: str | None, data_dir: str | Path | None, spec: SearchSpec, out: Path,
               weights: str | None) -> dict:  # fmt: skip
    """The command that rebuilds each front point from its file alone."""
    commands = {}
    for c in front:
        assert c.number is not None
        toml = out / "front" / f"trial-{c.number:04d}.toml"
        if c.recipe is not None and task is not None:
            data = f" --data-dir {data_dir}" if data_dir else ""
            commands[c.number] = (
                f"edgeshrink compress --task {task}{data} --weights {weights} --holdout {spec.holdout} "
                f"--seed {spec.seed} --recipe {toml} --out runs/trial-{c.number}"
            )
        elif c.recipe is not None:
            commands[c.number] = f"edgeshrink.compress(model, {str(toml)!r}, seed={spec.seed}, <the same loaders>)"
        else:
            commands[c.number] = f"the checkpoint {Path(c.folder) / 'model.pt'} (edgeshrink export it for the device)"
    return commands


def _collect(
    study: Any,
    spec: SearchSpec,
    out: Path,
    task: str | None,
    data_dir: str | Path | None,
    url: str,
    weights: str | None,
) -> SearchResult:
    from optuna.trial import TrialState

    cands = candidates(study)
    front = pareto(cands, spec.objectives)
    ref_data = study.user_attrs.get("reference")
    reference = None if ref_data is None else Candidate.from_dict(ref_data["candidate"])
    name = None if ref_data is None else ref_data["name"]
    files = write_front_files(front, out, _reproduce(front, task, data_dir, spec, out, weights))
    cost = next((o for o in spec.objectives if o != "accuracy"), "accuracy")
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    summary = {
        "what": f"{spec.mode} search ({spec.family or ', '.join(spec.stages)}) on {spec.model}",
        "device": spec.device, "study": study.study_name, "storage": describe(url), "candidates": len(cands),
        "feasible": sum(c.feasible for c in cands), "pruned": pruned, "finished": finished(study),
        "reference_name": name, "comparison": _comparison(front, reference, name, cost), "cpu": cpu_model(),
    }  # fmt: skip
    return SearchResult(cands, front, reference, files, summary, out, spec)


def search(
    model: nn.Module | None = None,
    *,
    task: str | None = None,
    data_dir: str | Path | None = None,
    weights: str | Path | None = None,
    train_loader: Batches | None = None,
    val_loader: Batches | None = None,
    test_loader: Batches | None = None,
    arch: dict | None = None,
    device: str = "cortex-m7",
    stages: Sequence[str] | None = None,
    family: str | None = None,
    objectives: Sequence[str] = ("accuracy", "bytes"),
    latency_budget_ms: float | None = None,
    max_accuracy_drop: float | None = None,
    trials: int = 20,
    timeout: float | None = None,
    study: str = "edgeshrink",
    storage: str | None = None,
    out: str | Path = "runs/search",
    sampler: str = "tpe",
    max_epochs: int = 3,
    per_layer: bool = True,
    reference: str | None = "deep-compression",
    holdout: int | None = None,
    seed: int = 0,
    threads: int = 1,
    progress: bool = True,
) -> SearchResult:
    """Search recipes (the `stages` template; default: what pays on the device) or a zoo `family`'s architectures
    for the most accurate models that fit `device`, with Optuna; returns the front and writes it to `out`.

    Give a built-in `task` (its data from `data_dir`, `holdout` training examples held out to choose on: by default
    a fifth of the training split, at most 5,000), or your `model` with `train_loader` and `val_loader` (and
    `test_loader` to report on). `storage` (default: a journal file in `out`; sqlite:///, postgresql://) holds the
    study `study`: the same call on several processes or machines joins it, and it stops when the study has
    `trials` finished trials. `reference`: a built-in recipe run once per study and marked on the report."""
    if sampler not in SAMPLERS:  # bad settings fail before any training
        raise ConfigError(f"unknown sampler {sampler!r}: choose from {', '.join(SAMPLERS)}")
    out, bar, dev = Path(out), Progress(progress), get_device(device)
    template = () if family else check_stages(stages or default_stages(dev))
    url = storage or default_storage(out)
    backend = open_storage(url)
    data, base, model_name, task_obj = _inputs(model, task, data_dir, weights, train_loader, val_loader, test_loader,
                                               arch, holdout, seed, family, out, bar)  # fmt: skip
    spec = SearchSpec(
        device=dev.name, objectives=tuple(objectives), stages=template, family=family,
        latency_budget_ms=latency_budget_ms, max_accuracy_drop=max_accuracy_drop, max_epochs=max_epochs,
        per_layer=per_layer, model=model_name, holdout=data.holdout, seed=seed,
        baseline=None if base is None else fingerprint(base.model),
    )  # fmt: skip
    evaluator = Evaluator(spec, dev, data, base, threads=threads, train_config=getattr(task_obj, "train", None))
    the_study = _open(study, url, backend, spec, sampler, trials, bar)
    if reference and not family and "reference" not in the_study.user_attrs:  # once per study
        the_study.set_user_attr("reference", reference_candidate(evaluator, reference, out, bar))
    build = architecture_builder(evaluator, family) if family else recipe_builder(evaluator, base)
    run_worker(the_study, spec, build, out, trials, timeout, bar)
    result = _collect(the_study, spec, out, task, data_dir, url, None if base is None else base.path)
    return result.with_paths(write_outputs(result, out))


def _open(name: str, url: str, backend: Any, spec: SearchSpec, sampler: str, trials: int, bar: Progress) -> Any:
    bar.line(f"[search] study {name!r} on {describe(url)}: {spec.mode} search for {spec.device}, {trials} trials")
    return open_study(name, backend, spec, sampler, trials)


def _inputs(model, task, data_dir, weights, train_loader, val_loader, test_loader, arch, holdout, seed, family,
            out: Path, bar: Progress):  # fmt: skip
    """(SearchData, Baseline or None, what is searched, the Task or None) from a task or the user's model."""
    if task is not None:
        if model is not None or train_loader is not None:
            raise ConfigError("give either task= or your model with its loaders, not both")
        from edgeshrink.tasks.registry import load_task

        t = load_task(task)
        data = task_data(t, None if data_dir is None else Path(data_dir), holdout, seed)
        if family:
            return data, None, f"task {task}", t
        base = task_baseline(t, data, None if weights is None else Path(weights), out, seed, bar)
        return data, base, f"task {task} ({t.model})", t
    if train_loader is None or val_loader is None:
        raise ConfigError("a search needs task= or train_loader= and val_loader= (the validation data it chooses on)")
    data = user_data(train_loader, val_loader, test_loader, seed)
    if family:
        return data, None, "your data", None
    if model is None:
        raise ConfigError("a recipe search needs the trained model= to compress (or family= for architectures)")
    return data, user_baseline(model, data, arch), type(model).__name__, None
