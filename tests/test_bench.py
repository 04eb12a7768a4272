"""`edgeshrink bench`: the windowed timing protocol (with the clock replaced), the Pareto front, and every
registered runtime on digits, from the Python API and the command line, with its JSON and report.html."""

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.benchmark.protocol import Protocol, measure_windows
from edgeshrink.benchmark.run import pareto_front
from edgeshrink.benchmark.runtimes import RUNTIMES, available
from edgeshrink.errors import ConfigError
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import TrainConfig, evaluate, fit


class FakeClock:
    """Each inference takes the next duration of `steps` (seconds, cycled); reading the clock costs nothing."""

    def __init__(self, steps):
        self.now, self.steps, self.calls = 0.0, list(steps), 0

    def __call__(self):
        return self.now

    def infer(self):
        self.now += self.steps[self.calls % len(self.steps)]
        self.calls += 1


def test_windows_hold_their_minimum_length_and_the_median_is_over_windows():
    clock = FakeClock([0.001])
    p = Protocol(windows=4, window_s=0.0095, min_runs=3, warmup_s=0.0025)
    result = measure_windows(clock.infer, p, clock)
    assert result.runs == 4 * 10  # 10 calls of 1 ms reach 9.5 ms
    assert clock.calls == 3 + 40  # warm-up: until 2.5 ms have passed
    assert result.windows_ms == pytest.approx([1.0] * 4) and result.median_ms == pytest.approx(1.0)


def test_window_latency_is_elapsed_over_count_and_spread_is_reported():
    steps = [0.001] * 5 + [0.003] * 5  # windows of 5 calls alternate between 1 ms and 3 ms calls
    clock = FakeClock(steps)
    p = Protocol(windows=5, window_s=1e-9, min_runs=5, warmup_s=0.0)
    result = measure_windows(clock.infer, p, clock)
    # warm-up takes the first 1 ms call, so each window straddles the two speeds: compute it from the steps
    durations = [steps[i % 10] for i in range(1, 26)]
    expected = [1e3 * sum(durations[5 * w : 5 * w + 5]) / 5 for w in range(5)]
    assert result.windows_ms == pytest.approx(expected)
    assert result.median_ms == pytest.approx(float(np.median(expected)))
    assert result.min_ms == pytest.approx(min(expected)) and result.max_ms == pytest.approx(max(expected))


def test_the_minimum_run_count_holds_for_slow_calls():
    clock = FakeClock([0.5])
    result = measure_windows(clock.infer, Protocol(windows=2, window_s=0.1, min_runs=4, warmup_s=0.0), clock)
    assert result.runs == 8 and result.median_ms == pytest.approx(500.0)


def test_pareto_front_against_brute_force():
    rng = random.Random(0)
    points = [(rng.choice([1.0, 2.0, 3.0, 4.0]), rng.choice([90.0, 95.0, 99.0])) for _ in range(40)]
    front = pareto_front(points)
    for (cost, acc), on in zip(points, front, strict=True):
        better = [(c, a) for c, a in points if c <= cost and a >= acc and (c, a) != (cost, acc)]
        assert on == (not better)
    assert pareto_front([(1.0, 90.0), (2.0, 99.0), (3.0, 95.0)]) == [True, True, False]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A float checkpoint and an int8 run folder of the digits task."""
    task = load_task("digits-cnn")
    data = task.data(None)
    torch.manual_seed(0)
    model = task.build_model()
    fit(model, task.train_loader(data), TrainConfig(epochs=2, optimizer="adam", lr=3e-3))
    folder = tmp_path_factory.mktemp("bench")
    checkpoint = folder / "float.pt"
    save_checkpoint(checkpoint, Artifact(model, Arch.parse(task.arch)), None)
    loader = task.train_loader(data)
    loader.repeats = 1
    edgeshrink.compress(
        model, "int8", train_loader=loader, val_loader=data.test.loader(1000), out=folder / "int8", arch=task.arch,
        progress=False,
    )  # fmt: skip
    return data, model, checkpoint, folder / "int8"


FAST = Protocol(windows=3, window_s=0.005, min_runs=3, warmup_s=0.0)


def test_every_runtime_on_digits(artifacts, tmp_path):
    data, model, checkpoint, int8 = artifacts
    names = [n for n in RUNTIMES if available(n)]
    result = edgeshrink.bench([checkpoint, int8], out=tmp_path, protocol=FAST, examples=120, progress=False)
    assert result.task == "digits-cnn" and not result.skipped
    assert sorted((r.artifact, r.runtime) for r in result.rows) == sorted(
        (str(a), n) for a in (checkpoint, int8) for n in names
    )
    expected = evaluate(model, [(data.test.inputs[:120], data.test.labels[:120])])
    for r in result.rows:
        assert r.bytes == os.path.getsize(r.file) and r.examples == 120
        assert r.latency.min_ms <= r.latency.median_ms <= r.latency.max_ms and len(r.latency.windows_ms) == 3
        if r.precision == "fp32":  # a float file computes what PyTorch does: the same decisions
            assert abs(r.accuracy - expected) <= 100 / 120
    tflm = [r for r in result.rows if r.runtime == "tflm"]
    assert tflm and all(r.peak_source.startswith("measured") for r in tflm)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert [row["accuracy"] for row in saved["rows"]] == [r.accuracy for r in result.rows]
    assert saved["system"]["threads"] == 2 and saved["notes"][0].startswith("Not MLPerf Tiny results")
    assert any(r.pareto for r in result.rows)


def test_an_exported_file_runs_in_its_own_runtime(artifacts, tmp_path):
    data, model, checkpoint, int8 = artifacts
    onnx = tmp_path / "m.onnx"
    edgeshrink.export(edgeshrink.load(checkpoint), onnx, format="onnx", verify_data=[data.test.inputs[:50]])
    result = edgeshrink.bench([onnx], task="digits-cnn", out=tmp_path / "b", protocol=FAST, examples=60, progress=False)
    assert [(r.runtime, r.file) for r in result.rows] == [("onnxruntime", str(onnx))]
    with pytest.raises(ConfigError, match="pass --task"):  # an exported file records no task
        edgeshrink.bench([onnx], out=tmp_path / "z", progress=False)


def test_the_command_prints_the_table_and_refuses_bad_input(artifacts, tmp_path):
    _, _, checkpoint, int8 = artifacts
    run = cli(
        "bench", int8, "--runtimes", "onnxruntime", "--out", tmp_path, "--windows", 2, "--window-ms", 5,
        "--examples", 60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "onnxruntime" in run.stdout and "bench.json" in run.stdout and "MLPerf" in run.stdout
    bad = cli("bench", int8, "--runtimes", "tensorrt", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "unknown runtime 'tensorrt'" in bad.stderr and len(bad.stderr.splitlines()) == 1
    missing = cli("bench", tmp_path / "nothing.pt", "--out", tmp_path / "y")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "m.pte").write_bytes(b"program")
    program = cli("bench", tmp_path / "m.pte", "--task", "digits-cnn", "--out", tmp_path / "p")
    assert program.returncode == 2 and "through the model it came from" in program.stderr


def test_report_renders_in_headless_chromium(artifacts, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: .ci/run should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    _, _, checkpoint, int8 = artifacts
    edgeshrink.bench(
        [checkpoint, int8], runtimes="onnxruntime", out=tmp_path, protocol=FAST, examples=60, progress=False
    )
    page = tmp_path / "report.html"
    assert page.read_text().count("data:image/png;base64,") == 2 and "<script" not in page.read_text()
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--window-size=1200,2000", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file(), run.stderr[-2000:]
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console


def test_zoo_models_not_sized_for_the_task_are_left_out_with_the_reason(tmp_path):
    from edgeshrink.benchmark.zoo import ZOO

    task = load_task("digits-cnn")  # 8x8 images: no zoo family is sized for them
    result = edgeshrink.bench(task=task.name, zoo=True, cache_dir=tmp_path, out=tmp_path / "o", progress=False)
    assert not result.rows and [s["artifact"] for s in result.skipped] == list(ZOO)
    assert all("sized for" in s["reason"] and "(1, 8, 8)" in s["reason"] for s in result.skipped)


def test_zoo_models_are_trained_cached_and_compared(tmp_path, monkeypatch):
    from edgeshrink.tasks import registry
    from edgeshrink.tasks.data import Dataset, Split
    from edgeshrink.train import TrainConfig as Config

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 1, 28, 28, generator=g)

    def blobs(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        return Split(centers[labels] + 0.3 * torch.randn(n, 1, 28, 28, generator=g), labels)

    data = Dataset("blobs", blobs(128), blobs(64), 10)
    task = registry.Task(
        "blobs-28", "lenet5", lambda _dir: data, Config(epochs=1, optimizer="adam", lr=3e-3), "test blobs",
        needs_data_dir=False, batch_size=64,
    )  # fmt: skip
    monkeypatch.setitem(registry._TASKS, task.name, task)
    cache = tmp_path / "cache"
    models = ["resnet8", "mobilenetv1"]
    kw = dict(task="blobs-28", runtimes="onnxruntime", protocol=FAST, zoo=True, zoo_models=models, cache_dir=cache)
    result = edgeshrink.bench(out=tmp_path / "a", progress=False, **kw)
    trained = sorted(p.name for p in cache.iterdir())
    assert trained == [f"blobs-28-{m}-seed0.pt" for m in sorted(models)] and not result.skipped
    assert sorted(Path(r.artifact).name for r in result.rows) == trained
    assert all(r.accuracy is not None and r.runtime == "onnxruntime" for r in result.rows)
    stamps = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    again = edgeshrink.bench(out=tmp_path / "b", progress=False, **kw)  # from the cache: no retraining
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert [r.accuracy for r in again.rows] == [r.accuracy for r in result.rows]
