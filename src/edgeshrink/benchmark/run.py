"""`edgeshrink.bench`: several models across several runtimes, measured alike on one task's test split.

For each artifact (checkpoint, run folder, container, or exported file) and each runtime that can run it:
accuracy from that runtime on the test split, file bytes, peak memory (measured where the runtime reports
it, else estimated and labelled), batch-1 latency by the windowed protocol (benchmark/protocol.py), MACs, and the
energy estimate for a device. Models are exported for each runtime into `out/files/`, verified there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeshrink.benchmark.protocol import Protocol, WindowedLatency, measure_windows
from edgeshrink.benchmark.runtimes import RUNTIMES, SUFFIX, Loaded, available, load, parse_runtimes, runtime_for_file
from edgeshrink.errors import ConfigError, EdgeshrinkError

NOT_MLPERF = (
    "Not MLPerf Tiny results: latency follows the spirit of its performance mode (timed windows after warm-up, "
    "median of the windows) on this host, with no official runner and no reference device."
)
EXPORTED = (".onnx", ".tflite", ".pte")


@dataclass
class BenchRow:
    """One artifact in one runtime."""

    artifact: str
    runtime: str
    file: str
    precision: str
    bytes: int
    accuracy: float | None
    examples: int
    latency: WindowedLatency
    peak_bytes: int | None
    peak_source: str
    macs: int
    energy_uj: float | None = None
    energy_source: str = ""
    pareto: bool = False  # on the accuracy-vs-latency front of all rows


@dataclass
class BenchResult:
    rows: list[BenchRow]
    skipped: list[dict] = field(default_factory=list)  # (artifact, runtime, reason)
    task: str | None = None
    device: str | None = None
    system: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For (cost, accuracy) points: True where no other point is at most as costly and at least as accurate,
    and strictly better in one."""
    front = []
    for i, (cost, acc) in enumerate(points):
        dominated = any(c <= cost and a >= acc and (c < cost or a > acc) for j, (c, a) in enumerate(points) if j != i)
        front.append(not dominated)
    return front


def _accuracy(loaded: Loaded, inputs: np.ndarray, labels: np.ndarray) -> float:
    out = np.concatenate([loaded.run(inputs[i : i + 500]) for i in range(0, len(inputs), 500)])
    return 100.0 * float((out.reshape(len(labels), -1).argmax(1) == labels).mean())


def _files_for(path: Path, runtimes: list[str], out: Path, data, threads: int) -> tuple[dict, list[dict], Any]:
    # `out` is this artifact's own folder of exported files
    """{runtime: (file, precision)} for an artifact path (exporting a model for each runtime), the skipped
    pairs with their reason, and the artifact's measured costs."""
    from edgeshrink.api.export import export
    from edgeshrink.io import load as load_artifact
    from edgeshrink.measure.profile import measure_artifact, measure_file

    if path.suffix.lower() == ".pte":
        raise ConfigError(
            f"{path}: bench a .pte through the model it came from (its checkpoint or run folder, with --runtimes "
            "executorch): edgeshrink reads no graph from an ExecuTorch program, so it could not count its MACs"
        )
    if path.suffix.lower() in EXPORTED:
        runtime = runtime_for_file(path)
        if runtime not in runtimes:
            return {}, [{"artifact": str(path), "runtime": runtime, "reason": "not among --runtimes"}], None
        costs = measure_file(path)
        return {runtime: (path, costs.dtype)}, [], costs
    art = load_artifact(path)
    costs = measure_artifact(art)
    files, skipped = {}, []
    calibration = list(data.train.inputs[:512].split(64))
    for runtime in runtimes:
        fmt = RUNTIMES[runtime][0]
        target = out / f"{path.stem if path.is_file() else path.name}{SUFFIX[fmt]}"
        try:
            result = export(
                art, target, format=fmt, verify_data=[data.test.inputs[:200]], calibration=calibration, threads=threads
            )
        except EdgeshrinkError as exc:
            skipped.append({"artifact": str(path), "runtime": runtime, "reason": str(exc)})
            continue
        files[runtime] = (Path(result.path), result.precision)
    return files, skipped, costs


def _file_costs(file: Path, model_costs):
    """The costs of one exported file: its own graph for a .tflite (an int8 TFLite Micro file of a float model
    computes in int8), the model's with the file's bytes and recorded precision for a .pte (api/deployed.py),
    the model's for an .onnx made here (its graph's weight DequantizeLinear outputs would count as activations)."""
    from edgeshrink.measure.profile import measure_file

    if file.suffix == ".onnx" and model_costs is not None:
        size = file.stat().st_size
        return dataclasses.replace(model_costs, weights=dataclasses.replace(model_costs.weights, file=size))
    if file.suffix == ".pte":
        from edgeshrink.api.deployed import pte_costs

        return pte_costs(model_costs, file)
    return measure_file(file)


def _energy(costs, device) -> tuple[float | None, str]:
    if device is None or costs is None:
        return None, ""
    from edgeshrink.devices.estimate import estimate_on_device

    energy = estimate_on_device(costs, device).energy
    if energy.board is not None:
        return energy.board.uj, f"estimated: board power x estimated latency ({energy.board.provenance})"
    return energy.op_table.uj, "estimated: the device's energy per operation and per byte moved"


def _bench_one(path: Path, runtimes, out, data, device, protocol, threads, examples, progress) -> tuple[list, list]:
    files, skipped, costs = _files_for(path, runtimes, out, data, threads)  # out: files/<n>/ of this artifact
    inputs, labels = data.test.inputs.numpy(), data.test.labels.numpy()
    if examples:
        inputs, labels = inputs[:examples], labels[:examples]
    rows = []
    for runtime, (file, precision) in files.items():
        progress(f"bench {path.name}: {runtime} ({file.name})")
        own = _file_costs(file, costs)  # the file's own precision and graph (an int8 TFLM file of a float model)
        energy, energy_source = _energy(own, device)
        loaded = load(runtime, file, precision, inputs[:1], threads, own.activations)
        accuracy = _accuracy(loaded, inputs, labels)
        latency = measure_windows(loaded.call, protocol)
        progress(
            f"  accuracy {accuracy:.2f}%, latency {latency.median_ms:.3f} ms (median of {protocol.windows} windows)"
        )
        rows.append(
            BenchRow(
                str(path), runtime, str(file), precision, loaded.bytes, accuracy, len(labels), latency,
                loaded.peak_bytes, loaded.peak_source, int(own.macs.dense), energy, energy_source,
            )
        )  # fmt: skip
    return rows, skipped


def bench(
    artifacts: list[str | Path] = (),
    *,
    task: str | None = None,
    data_dir: str | Path | None = None,
    runtimes: str | list[str] | None = None,
    device: str | None = None,
    out: str | Path = "runs/bench",
    protocol: Protocol = Protocol(),
    threads: int = 2,
    examples: int = 0,
    zoo: bool = False,
    zoo_epochs: int | None = None,
    zoo_models: list[str] | None = None,
    cache_dir: str | Path = ".cache/zoo",
    progress: bool = True,
) -> BenchResult:
    """Benchmark `artifacts` (and with `zoo`, the zoo's efficient architectures, or `zoo_models`, trained on
    `task`, cached in `cache_dir`) in `runtimes` (names or a comma list; default: every runtime installed) on
    the task's test split; writes `out/bench.json` and `out/report.html`."""
    from edgeshrink.benchmark.report import write_outputs
    from edgeshrink.environment import environment
    from edgeshrink.tasks.registry import load_task

    names = _installed(runtimes)
    paths = _existing(artifacts)
    if not paths and not zoo:
        raise ConfigError("nothing to benchmark: pass artifacts, or --zoo with --task")
    if zoo and task is None:
        raise ConfigError("--zoo trains the zoo on one task: pass --task")
    t = load_task(task or _recorded_task(paths))
    data = t.data(data_dir)
    skipped: list[dict] = []
    if zoo:
        from edgeshrink.benchmark.zoo import ZOO, zoo_checkpoints

        models = tuple(zoo_models or ZOO)
        trained, skipped = zoo_checkpoints(t, data, Path(cache_dir), zoo_epochs, models, progress=progress)
        paths += trained
    dev = _device(device)
    say = print if progress else (lambda *_: None)
    out = Path(out)
    rows = []
    for n, path in enumerate(paths):
        folder = out / "files" / str(n + 1)  # artifacts of the same name do not overwrite each other's files
        more, why = _bench_one(path, names, folder, data, dev, protocol, threads, examples, say)
        rows += more
        skipped += why
    for row, on_front in zip(rows, pareto_front([(r.latency.median_ms, r.accuracy or 0.0) for r in rows]), strict=True):
        row.pareto = on_front
    system = {**environment(), "threads": threads, "cpu_flags": _cpu_flags(), "runtimes": _versions(names)}
    result = BenchResult(rows, skipped, t.name, device, system, [NOT_MLPERF])
    write_outputs(result, out)
    return result


def _installed(runtimes: str | list[str] | None) -> list[str]:
    names = parse_runtimes(",".join(runtimes) if isinstance(runtimes, list) else runtimes)
    missing = [n for n in names if not available(n)]
    if missing:
        raise ConfigError(f"runtime {missing[0]} is not installed here: {RUNTIMES[missing[0]][2]} (see the README)")
    return names


def _existing(artifacts) -> list[Path]:
    paths = [Path(a) for a in artifacts]
    for p in paths:
        if not p.exists():
            raise ConfigError(f"{p} does not exist: pass checkpoints, run folders, containers or exported files")
    return paths


def _device(name: str | None):
    from edgeshrink.devices.catalogue import get_device

    return get_device(name) if name else None


def _recorded_task(paths: list[Path]) -> str:
    from edgeshrink.io import read_stored

    for p in paths:
        if p.suffix.lower() not in EXPORTED:
            task = read_stored(p).arch.task
            if task:
                return task
    raise ConfigError("no artifact records its task: pass --task (the test split accuracy is measured on)")


def _cpu_flags() -> list[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_int8", "neon", "asimd")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), []
    )
    return [f for f in wanted if f in flags]


def _versions(names: list[str]) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    packages = {
        "onnxruntime": "onnxruntime",
        "litert": "ai-edge-litert",
        "tflm": "tflite-micro",
        "executorch": "executorch",
    }
    out = {}
    for n in names:
        try:
            out[n] = version(packages[n])
        except PackageNotFoundError:
            out[n] = None
    return out
