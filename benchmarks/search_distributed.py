"""Distributed search throughput: 2 worker processes (one torch thread each) against 1, on one PostgreSQL study.

    python benchmarks/search.py --data-dir ../shared/data --parts distributed --out distributed.json

Both phases get the same queue of candidates (drawn once from the recipe space and enqueued in each study), so they
do the same work in the same order; each worker is `edgeshrink search` started as its own process with --timeout.
Trials per hour = finished trials / (last completion - first start). Afterwards: no trial left running or failed,
no candidate measured twice, and both workers' trials in the two-worker study.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

import edgeshrink
from edgeshrink.autosearch.space import sample_recipe, space_context
from edgeshrink.devices.catalogue import get_device
from edgeshrink.io import load
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress

ROOT = Path(__file__).resolve().parents[1]
STAGES = "prune,share"


def _postgres(args) -> str:
    url = args.postgres or os.environ.get("EDGESHRINK_TEST_POSTGRES")
    if url:
        return url
    return subprocess.run(["bash", str(ROOT / ".ci" / "postgres.sh")], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def _queue(baseline: Path, n: int, max_epochs: int, seed: int) -> list[dict]:
    """`n` candidates of the recipe space, drawn once (random sampler)."""
    model = load(baseline, load_task("mnist-lenet5").build_model()).model
    ctx = space_context(model, get_device("cortex-m7"), max_epochs, True)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for i in range(n):
        trial = draw.ask()
        sample_recipe(trial, tuple(STAGES.split(",")), ctx, f"q{i}")
        out.append(trial.params)
    return out


def _worker(args, url: str, study: str, out: Path, baseline: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edgeshrink.cli", "search", "--task", "mnist-lenet5", "--data-dir",
           str(args.data_dir / "mnist"), "--device", "cortex-m7", "--stages", STAGES, "--max-epochs",
           str(args.dist_epochs), "--trials", "100000", "--timeout", str(args.dist_minutes * 60), "--storage", url,
           "--study", study, "--out", str(out), "--weights", str(baseline), "--reference", "none", "--threads", "1",
           "--sampler", "random", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _phase(args, url: str, workers: int, queue: list[dict], baseline: Path, progress: Progress) -> dict:
    name = f"distributed-{workers}w-{int(time.time())}"
    out = args.runs_dir / name
    edgeshrink.search(task="mnist-lenet5", data_dir=args.data_dir / "mnist", weights=baseline, device="cortex-m7",
                      stages=STAGES.split(","), max_epochs=args.dist_epochs, trials=0, storage=url, study=name,
                      out=out, reference=None, progress=False)  # fmt: skip
    study = optuna.load_study(study_name=name, storage=url)
    for params in queue:
        study.enqueue_trial(params)
    progress.line(f"[distributed] {workers} worker(s), {args.dist_minutes} min")
    procs = [_worker(args, url, name, out, baseline) for _ in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    return summarise(study, workers)


def summarise(study, workers: int) -> dict:
    """Finished trials per hour of a phase's study (first start to last end), and what went wrong: trials left
    running, failed, or the same parameters measured twice."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    hours = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds() / 3600
    measured = [json.dumps(t.params, sort_keys=True) for t in done if "candidate" in t.user_attrs]
    return {
        "workers": workers, "study": study.study_name, "finished": len(done), "hours": hours,
        "trials_per_hour": len(done) / hours, "left_running": sum(t.state == TrialState.RUNNING for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "measured_twice": len(measured) - len(set(measured)),
        "worker_pids": sorted({t.user_attrs["worker"]["pid"] for t in done}),
    }  # fmt: skip


def _phases(args, url: str, progress: Progress) -> tuple[dict, dict]:
    if args.dist_studies:  # the phases ran already (this process was stopped before writing): read their studies
        one, two = (summarise(optuna.load_study(study_name=n, storage=url), w)
                    for w, n in zip((1, 2), args.dist_studies.split(","), strict=True))  # fmt: skip
        return one, two
    base_out = args.runs_dir / "distributed-baseline"
    edgeshrink.search(task="mnist-lenet5", data_dir=args.data_dir / "mnist", device="cortex-m7", trials=0,
                      out=base_out, reference=None, stages=STAGES.split(","), progress=progress.enabled)  # fmt: skip
    baseline = base_out / "baseline.pt"
    queue = _queue(baseline, args.dist_queue, args.dist_epochs, args.seed)
    return _phase(args, url, 1, queue, baseline, progress), _phase(args, url, 2, queue, baseline, progress)


def run_distributed(args, progress: Progress) -> list[dict]:
    url = _postgres(args)
    one, two = _phases(args, url, progress)
    ratio = two["trials_per_hour"] / one["trials_per_hour"]
    progress.line(f"[distributed] {one['trials_per_hour']:.1f} -> {two['trials_per_hour']:.1f} trials/h ({ratio:.2f}x)")
    return [{"part": "distributed", "storage": "PostgreSQL (this machine)", "minutes_per_phase": args.dist_minutes,
             "max_epochs": args.dist_epochs, "one_worker": one, "two_workers": two, "ratio": ratio}]  # fmt: skip


def add_options(parser) -> None:
    parser.add_argument("--postgres", default=None, help="PostgreSQL URL (default: start this machine's)")
    parser.add_argument("--dist-minutes", type=float, default=8.0, help="minutes each phase's workers run")
    parser.add_argument("--dist-epochs", type=int, default=1, help="fine-tuning epochs per run in these trials")
    parser.add_argument("--dist-studies", default=None, help="ONE,TWO: summarise these finished phase studies")
    parser.add_argument("--dist-queue", type=int, default=200, help="candidates queued for both phases")
