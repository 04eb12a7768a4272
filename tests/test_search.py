"""`edgeshrink search` on the digits task at tiny settings: the front is the Pareto front of what was measured, every
front recipe reproduces its container bit for bit through `compress`, the built-in recipe is measured alike, a
worker with another space is refused, a study survives a worker killed mid-trial, and a user's own model searches
through the Python API."""

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from helpers import SmallNet, cli, loaders
from optuna.trial import TrialState

import edgeshrink
from edgeshrink.autosearch.storage import open_storage
from edgeshrink.errors import ConfigError
from edgeshrink.io import load, save_checkpoint
from edgeshrink.tasks.registry import load_task

DIGITS = {"task": "digits-cnn", "device": "cortex-m4", "max_epochs": 1, "holdout": 300, "progress": False}


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    result = edgeshrink.search(**DIGITS, trials=4, out=out, reference="deep-compression", stages=["prune", "share"])
    return result, out


def _dominates(a, b) -> bool:
    return (
        a.val_accuracy >= b.val_accuracy
        and a.deployable["bytes"] <= b.deployable["bytes"]
        and (a.val_accuracy > b.val_accuracy or a.deployable["bytes"] < b.deployable["bytes"])
    )


def test_the_front_is_the_pareto_front_of_the_feasible_candidates(searched):
    result, out = searched
    assert result.summary["finished"] == 4 and 1 <= len(result.candidates) <= 4 and result.front
    feasible = [c for c in result.candidates if c.feasible]
    front = {c.number for c in result.front}

    def same(a, b) -> bool:
        return (a.val_accuracy, a.deployable["bytes"]) == (b.val_accuracy, b.deployable["bytes"])

    for c in feasible:  # brute force: on the front exactly when no feasible candidate dominates it (of twins, one)
        if any(_dominates(o, c) for o in feasible if o is not c):
            assert c.number not in front
        else:
            assert c.number in front or any(same(o, c) for o in result.front)
    assert all(c.feasible for c in result.front)
    saved = json.loads((out / "search.json").read_text())
    assert [c["number"] for c in saved["front"]] == [c.number for c in result.front]
    assert "<img" in (out / "report.html").read_text()


def test_each_candidate_was_measured_on_the_file_the_device_runs(searched):
    result, _ = searched
    for c in result.candidates:
        path = Path(c.deployable["file"])
        assert path.is_file() and path.stat().st_size == c.deployable["bytes"]  # the bytes of the file written
        assert c.deployable["format"] == "tflm" and c.deployable["ram_source"].startswith("measured")
        device_ram = 262_144
        assert c.constraints["ram"] == pytest.approx(c.deployable["ram_bytes"] / device_ram - 1)


def test_every_front_recipe_reproduces_its_container_exactly(searched):
    result, out = searched
    task = load_task("digits-cnn")
    data, val = task.data(None).hold_out(300)
    baseline = load(out / "baseline.pt", task.build_model()).model
    for c in result.front:
        toml = Path(result.files[c.number])
        rerun = edgeshrink.compress(
            baseline, toml, train_loader=task.train_loader(data, 0), val_loader=val.loader(1000),
            out=out / "rerun" / str(c.number), seed=0, arch=task.arch, progress=False,
        )  # fmt: skip
        assert _sha(rerun.path) == _sha(Path(c.folder) / "model.eshrink")


def test_the_built_in_recipe_is_measured_alike_and_compared(searched):
    result, _ = searched
    ref = result.reference
    assert ref is not None and ref.kind == "reference" and ref.deployable["format"] == "tflm"
    assert [s["type"] for s in ref.recipe["stages"]] == ["prune", "share"]
    assert result.summary["reference_name"] == "deep-compression"
    comparison = result.summary["comparison"][0]
    better = [
        c
        for c in result.front
        if c.deployable["bytes"] < ref.deployable["bytes"] and c.test_accuracy >= ref.test_accuracy
    ]
    assert comparison.startswith(f"{len(better)} front point") if better else comparison.startswith("no front point")


def test_a_worker_with_another_space_or_device_is_refused(searched):
    _, out = searched
    with pytest.raises(ConfigError, match="this study searches with"):
        edgeshrink.search(
            **{**DIGITS, "device": "cortex-m7"}, trials=4, out=out, reference=None, stages=["prune", "share"]
        )
    with pytest.raises(ConfigError, match="this study searches with stages"):
        edgeshrink.search(**DIGITS, trials=4, out=out, reference=None, stages=["prune"])
    other = load(out / "baseline.pt")  # another baseline: a worker must compress the study's model
    with torch.no_grad():
        other.model.fc2.bias.add_(0.01)
    save_checkpoint(out / "other.pt", other)
    with pytest.raises(ConfigError, match="this study searches with baseline"):
        edgeshrink.search(
            **DIGITS, trials=4, out=out, reference=None, stages=["prune", "share"], weights=out / "other.pt"
        )


def test_the_command_line_reports_a_finished_study_without_new_trials(searched):
    _, out = searched
    done = cli("search", "--task", "digits-cnn", "--device", "cortex-m4", "--max-epochs", "1", "--holdout", "300",
               "--stages", "prune,share", "--trials", "0", "--out", str(out), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "front recipes:" in done.stdout and "deep-compression (built-in)" in done.stdout
    bad = cli("search", "--task", "digits-cnn", "--storage", "redis://x", "--out", str(out), "--quiet")
    assert bad.returncode == 2 and "is not one edgeshrink search knows" in bad.stderr


def _worker(out: Path, trials: int, storage: str | None = None, study: str = "edgeshrink") -> subprocess.Popen:
    args = [sys.executable, "-m", "edgeshrink.cli", "search", "--task", "digits-cnn", "--device", "cortex-m4",
            "--max-epochs", "1", "--holdout", "300", "--stages", "prune,share", "--trials", str(trials),
            "--reference", "none", "--threads", "1", "--out", str(out), "--study", study, "--quiet"]  # fmt: skip
    if storage:
        args += ["--storage", storage]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _running(storage, name: str) -> list:
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def test_a_worker_killed_mid_trial_loses_only_that_trial(tmp_path):
    edgeshrink.search(**DIGITS, trials=0, out=tmp_path, reference=None, stages=["prune", "share"])  # the baseline
    storage = open_storage(f"journal:{tmp_path / 'study.journal'}")
    victim = _worker(tmp_path, trials=50)
    deadline = time.monotonic() + 120
    while not _running(storage, "edgeshrink") and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = _running(storage, "edgeshrink")
    assert killed, victim.communicate()[1]
    # Kill it mid-training, not mid-sampling: parameters are sampled in milliseconds, a trial trains for
    # seconds, so parameters unchanged for a second mean the trial has all of them (a trial killed while
    # sampling has only some, and its retry samples the rest).
    seen, stable_since = None, time.monotonic()
    while time.monotonic() < deadline:
        killed = _running(storage, "edgeshrink")
        current = (killed[0].number, killed[0].params) if killed else None
        if current != seen:
            seen, stable_since = current, time.monotonic()
        elif current and current[1] and time.monotonic() - stable_since >= 1.0:
            break
        time.sleep(0.1)
    assert killed, "no trial was running a second after its parameters were sampled"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    result = edgeshrink.search(**DIGITS, trials=3, out=tmp_path, reference=None, stages=["prune", "share"])
    study = optuna.load_study(study_name="edgeshrink", storage=storage)
    dead = study.trials[killed[0].number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["failure"] == "its worker process died"
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retry) == 1 and retry[0].params == dead.params, [t.user_attrs for t in retry]
    assert retry[0].state == TrialState.COMPLETE, retry[0].user_attrs
    assert result.summary["finished"] == 3  # the study went on to the asked number of finished trials


def test_two_workers_share_one_postgresql_study(tmp_path):
    url = os.environ.get("EDGESHRINK_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must start PostgreSQL and set EDGESHRINK_TEST_POSTGRES (see .ci/run)")
        pytest.skip("no PostgreSQL: set EDGESHRINK_TEST_POSTGRES=postgresql://USER@HOST/DB")
    name = f"two-workers-{os.getpid()}-{time.time_ns()}"
    edgeshrink.search(**DIGITS, trials=0, out=tmp_path, reference=None, stages=["prune", "share"], storage=url,
                      study=name)  # fmt: skip
    workers = [_worker(tmp_path, trials=6, storage=url, study=name) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=url)
    done = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(done) >= 6 and not study.get_trials(states=(TrialState.RUNNING, TrialState.FAIL))
    pids = {t.user_attrs["worker"]["pid"] for t in done}
    assert len(pids) == 2  # trials from both workers
    measured = [t for t in done if "candidate" in t.user_attrs]
    for a, b in itertools.combinations(measured, 2):  # a point measured twice only if sampled at the same moment
        overlap = a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        assert a.params != b.params or overlap
    assert len({t.user_attrs["candidate"]["folder"] for t in measured}) == len(measured)  # no trial run twice
    repeats = [t for t in done if "same_as" in t.user_attrs]
    assert all(study.trials[t.user_attrs["same_as"]].params == t.params for t in repeats)
    assert list((tmp_path / "front").glob("trial-*.toml"))


def test_a_users_own_model_and_loaders_search_through_the_python_api(tmp_path, trained):
    train, val = loaders()
    result = edgeshrink.search(
        trained, train_loader=train, val_loader=val, device="raspberry-pi-4", stages=["prune", "quantize"],
        objectives=["accuracy", "latency"], trials=2, max_epochs=1, out=tmp_path, reference=None, progress=False,
    )  # fmt: skip
    assert result.summary["finished"] == 2 and result.candidates and result.spec.model == "SmallNet"
    for c in result.candidates:
        assert c.deployable["format"] in ("pte", "tflite") and c.deployable["latency_ms"] > 0
        assert c.deployable["latency_source"].startswith("estimated")
    assert isinstance(trained, SmallNet) and not any(
        torch.nn.utils.parametrize.is_parametrized(m) for m in trained.modules()
    )


TINY_MCU = """
name = "tiny-mcu"
description = "a made-up microcontroller too small for any DS-CNN"
kind = "mcu"
flash_bytes = 2048
ram_bytes = 1024
sram_bytes = 1024
fp32_macs_per_s = 1e6
int8_macs_per_s = 4e6
memory_bandwidth_bytes_per_s = 1e7
op_overhead_s = 1e-5
[sources]
flash_bytes = "test"
ram_bytes = "test"
sram_bytes = "test"
fp32_macs_per_s = "test"
int8_macs_per_s = "test"
memory_bandwidth_bytes_per_s = "test"
op_overhead_s = "test"
"""


def test_an_architecture_search_trains_candidates_of_the_family_and_saves_each(tmp_path):
    result = edgeshrink.search(**{**DIGITS, "device": "cortex-m7"}, family="ds-cnn", trials=2, out=tmp_path,
                               objectives=["accuracy", "latency"])  # fmt: skip
    assert result.spec.mode == "architecture" and result.reference is None
    for c in result.candidates:
        assert c.arch["model"] == "ds-cnn" and c.deployable["format"] == "tflm"
        loaded = edgeshrink.load(Path(c.folder) / "model.pt")  # the trained candidate, rebuilt from its arch
        kwargs = {k: v for k, v in c.arch["model_kwargs"].items() if k != "num_classes"}
        expected = edgeshrink.create_model("ds-cnn", input_shape=(1, 8, 8), num_classes=10, **kwargs)
        assert [p.shape for p in loaded.model.parameters()] == [p.shape for p in expected.parameters()]
    assert all(Path(p).suffix == ".json" for p in result.files.values())


def test_architectures_that_cannot_fit_are_pruned_before_training(tmp_path, monkeypatch):
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "tiny-mcu.toml").write_text(TINY_MCU)
    monkeypatch.setenv("EDGESHRINK_DEVICES", str(tmp_path / "devices"))
    result = edgeshrink.search(**{**DIGITS, "device": "tiny-mcu"}, family="ds-cnn", trials=3, out=tmp_path / "s")
    study = optuna.load_study(
        study_name="edgeshrink", storage=open_storage(f"journal:{tmp_path / 's' / 'study.journal'}")
    )
    assert not result.candidates and not result.front and (tmp_path / "s" / "report.html").is_file()
    for t in study.trials:
        assert t.state == TrialState.PRUNED and "exceed" in t.user_attrs["infeasible"]
        assert not (tmp_path / "s" / "trials" / f"{t.number:04d}").exists()  # nothing was trained or written


def test_accuracy_alone_is_a_single_objective_search_with_successive_halving(tmp_path):
    result = edgeshrink.search(**DIGITS, stages=["prune"], objectives=["accuracy"], trials=4, out=tmp_path,
                               reference=None)  # fmt: skip
    study = optuna.load_study(study_name="edgeshrink", storage=open_storage(f"journal:{tmp_path / 'study.journal'}"))
    assert len(study.directions) == 1
    reported = [t for t in study.trials if t.intermediate_values]
    assert reported  # every fine-tuning epoch reported its validation accuracy, for the pruner to judge
    assert all(max(t.intermediate_values) >= 1 for t in reported)
    best = max(result.candidates, key=lambda c: c.val_accuracy)
    assert result.front == [best]  # one objective: the front is the best feasible candidate
