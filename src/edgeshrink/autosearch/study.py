"""The search loop on an Optuna study: one worker's trials until the study holds the asked number, with the device
as constraints and accuracy against bytes or latency as objectives.

Several workers (processes or machines) running the same command on one storage share the study: each asks
the sampler for the next candidate (TPE with a constant liar, so running trials are not proposed twice), and a
worker stops when the study has `trials` finished trials (complete, or pruned: infeasible, or stopped early).
A trial whose worker died is failed and its parameters queued again (search/storage.py), so it does not count.
"""

from __future__ import annotations

import os
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeshrink.autosearch.candidate import Candidate
from edgeshrink.autosearch.spec import SearchSpec
from edgeshrink.autosearch.storage import reap_dead_workers, require_optuna, worker_id
from edgeshrink.errors import EdgeshrinkError
from edgeshrink.train import Progress

Build = Callable[[Any], Callable[[Path, Callable[[dict], None] | None], Candidate]]  # trial -> measure(folder, ...)


def make_sampler(name: str, spec: SearchSpec, trials: int, study: str = "") -> Any:
    """TPE (multivariate, grouped for conditional spaces, constant liar for parallel workers), NSGA-II or random;
    seeded from the spec's seed, the study and this process, so parallel workers (and two studies searched by one
    process) draw different candidates. The device's constraints reach them through each trial's
    `set_constraint`."""
    optuna = require_optuna()
    seed = (spec.seed * 1_000_003 + zlib.crc32(study.encode()) + os.getpid()) % 2**31
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(4, min(50, trials // 3)), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # `group` (conditional spaces) is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            n_startup_trials=max(4, min(10, trials // 3)), multivariate=True, group=True, constant_liar=True, seed=seed
        )


def open_study(name: str, storage: Any, spec: SearchSpec, sampler: str, trials: int) -> Any:
    """Create the study, or join it after checking that it searches the same space."""
    optuna = require_optuna()
    single = len(spec.objectives) == 1
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1) if single else optuna.pruners.NopPruner()
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=make_sampler(sampler, spec, trials, name), pruner=pruner,
        directions=spec.directions, load_if_exists=True,
    )  # fmt: skip
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", spec.to_dict())
    else:
        spec.check_joins(stored)
    return study


def finished(study: Any) -> int:
    """Trials that count towards the asked number: complete or pruned (failed ones are retried)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class _Epochs:
    """Single-objective searches report validation accuracy after every training epoch, so successive halving
    stops unpromising candidates early."""

    def __init__(self, trial: Any) -> None:
        self.trial, self.step = trial, 0

    def __call__(self, record: dict) -> None:
        optuna = require_optuna()
        if "val_accuracy" not in record:
            return
        self.step += 1
        self.trial.report(record["val_accuracy"], self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"stopped after {self.step} epochs at {record['val_accuracy']:.2f}%")


TWIN_WAIT_S = 1800.0  # the longest a trial waits for an earlier running trial with its parameters


def measured_twin(trial: Any) -> Candidate | None:
    """A trial of the study with exactly these parameters, already measured: its candidate is this one (samplers
    propose a point again, above all in small discrete corners of a space). An earlier-numbered twin still running
    on another worker is waited for (its worker may die: then this trial measures). Two workers that sample the
    same point at the same moment, before either sees the other, both measure it."""
    from optuna.trial import TrialState

    waited_since = time.monotonic()
    while True:
        running = False
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number == trial.number or other.params != trial.params:
                continue
            if other.state == TrialState.COMPLETE and "candidate" in other.user_attrs:
                return Candidate.from_dict(other.user_attrs["candidate"])
            running = running or (other.state == TrialState.RUNNING and other.number < trial.number)
        if not running or time.monotonic() - waited_since > TWIN_WAIT_S:
            return None
        time.sleep(0.5)
        reap_dead_workers(trial.study)


def _candidate(trial: Any, spec: SearchSpec, build: Build, out: Path) -> Candidate:
    measure = build(trial)  # samples the trial's parameters
    twin = measured_twin(trial)
    if twin is not None:
        trial.set_user_attr("same_as", twin.number)
        return twin
    on_epoch = _Epochs(trial) if len(spec.objectives) == 1 else None
    return measure(out / "trials" / f"{trial.number:04d}", on_epoch)


def objective(spec: SearchSpec, build: Build, out: Path, progress: Progress) -> Callable[[Any], Any]:
    """The function Optuna calls per trial: build the candidate (or reuse a twin's measurement), record it, return
    its objective values."""
    optuna = require_optuna()

    def run(trial: Any) -> Any:
        reap_dead_workers(trial.study)
        trial.set_user_attr("worker", worker_id())
        try:
            candidate = _candidate(trial, spec, build, out)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned", str(exc))
            progress.line(f"[search] trial {trial.number}: pruned: {exc}")
            raise
        except EdgeshrinkError as exc:  # this candidate cannot be built or exported: recorded, the search goes on
            trial.set_user_attr("error", str(exc))
            progress.line(f"[search] trial {trial.number}: not deployable: {exc}")
            raise optuna.TrialPruned(str(exc)) from None
        if "same_as" not in trial.user_attrs:
            candidate.number = trial.number
            trial.set_user_attr("candidate", candidate.to_dict())
        for key, violation in candidate.constraints.items():  # the samplers prefer candidates that fit
            trial.set_constraint(key, violation)
        twin = trial.user_attrs.get("same_as")
        progress.line(
            f"[search] trial {trial.number}: " + (f"as trial {twin}" if twin is not None else summary(candidate))
        )
        values = tuple(candidate.value(o) for o in spec.objectives)
        return values[0] if len(values) == 1 else values

    return run


def summary(c: Candidate) -> str:
    d = c.deployable
    fits = "fits" if c.feasible else "does not fit (" + ", ".join(k for k, v in c.constraints.items() if v > 0) + ")"
    return (
        f"val {c.val_accuracy:.2f}%, {d['format']} {d['bytes']:,} B, RAM {d['ram_bytes']:,} B, "
        f"~{d['latency_ms']:.2f} ms: {fits} ({c.seconds:.0f} s)"
    )


def run_worker(study: Any, spec: SearchSpec, build: Build, out: Path, trials: int, timeout: float | None,
               progress: Progress) -> int:  # fmt: skip
    """Run trials in this process until the study has `trials` finished ones (or `timeout` seconds passed);
    returns how many this worker finished."""
    reap_dead_workers(study)
    started, me = time.monotonic(), worker_id()

    def stop_when_done(study: Any, _trial: Any) -> None:
        if finished(study) >= trials:
            study.stop()

    if finished(study) >= trials:
        return 0
    study.optimize(objective(spec, build, out, progress), timeout=timeout, callbacks=[stop_when_done])
    mine = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == me)
    progress.line(f"[search] this worker ran {mine} trial(s) in {time.monotonic() - started:.0f} s")
    return mine
