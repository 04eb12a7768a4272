"""Automated, hardware-aware search, measured (issue 17).

    python benchmarks/search.py --data-dir ../shared/data --out search.json [--parts recipe,nas,lottery,distributed]

- recipe: LeNet-5 on MNIST for cortex-m7 and cortex-m4, --minutes of search each (the baseline and the built-in
  deep-compression recipe's run are not counted): the front, and whether a front point dominates deep-compression's
  result (a smaller TFLite Micro file at equal or better test accuracy, measured in the TFLM interpreter).
- nas: DS-CNN architectures on Fashion-MNIST for cortex-m7 (each trained --nas-epochs on the fixed 10,000-image
  subset), the front against the zoo's fixed models trained alike: accuracy, MACs, ONNX Runtime latency here.
- lottery: benchmarks/lottery.py (LeNet-300-100 tickets, rewound against randomly re-initialised).
- distributed: benchmarks/search_distributed.py (2 workers against 1 on one PostgreSQL study).
Never run two of these at once: each trains with every core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import edgeshrink
from edgeshrink.environment import environment
from edgeshrink.train import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lottery  # noqa: E402
import search_distributed  # noqa: E402
from common import DATA_SUBDIRS  # noqa: E402

ZOO = {"ds-cnn": {}, "resnet8": {}, "mobilenetv2": {"width": 0.5}}  # the fixed models the NAS front is set against


def _search_minutes(result) -> float:
    """Minutes from the first trial's start to the last one's end (the baseline and reference excluded)."""
    import optuna

    study = optuna.load_study(study_name=result.summary["study"], storage=_storage(result.out))
    times = [(t.datetime_start, t.datetime_complete) for t in study.trials if t.datetime_complete and t.datetime_start]
    return (max(e for _, e in times) - min(s for s, _ in times)).total_seconds() / 60 if times else 0.0


def _nas_outcomes(result) -> dict:
    """What became of the trials: measured, repeats of a measured point (`same_as`), refused (not deployable), and
    per input resolution how many were refused of how many tried."""
    import optuna

    study = optuna.load_study(study_name=result.summary["study"], storage=_storage(result.out))
    kinds = {"measured": "candidate", "repeats": "same_as", "refused": "error"}
    counts = {k: sum(attr in t.user_attrs for t in study.trials) for k, attr in kinds.items()}
    by_resolution: dict[int, list[int]] = {}
    for t in study.trials:
        if "resolution" in t.params and ("error" in t.user_attrs or "candidate" in t.user_attrs):
            tally = by_resolution.setdefault(t.params["resolution"], [0, 0])
            tally[0] += "error" in t.user_attrs
            tally[1] += 1
    return {**counts, "refused_of_tried_by_resolution": dict(sorted(by_resolution.items()))}


def _storage(out: Path):
    from edgeshrink.autosearch.storage import default_storage, open_storage

    return open_storage(default_storage(out))


def tflm_test_accuracy(path: str, data) -> float:
    """Top-1 of a TFLite Micro file on the whole test split, run in the TFLM interpreter."""
    from edgeshrink.runtimes.tflm import TFLMSession

    session = TFLMSession(Path(path).read_bytes())
    inputs, labels = data.test.inputs.numpy(), data.test.labels.numpy()
    out = np.concatenate([session.run(inputs[i : i + 500]) for i in range(0, len(inputs), 500)])
    return 100.0 * float((out.reshape(len(labels), -1).argmax(1) == labels).mean())


def _point(c, data=None) -> dict:
    d = c.deployable
    out = {"trial": c.number, "kind": c.kind, "val_accuracy": c.val_accuracy, "test_accuracy": c.test_accuracy,
           "file": d["file"], "bytes": d["bytes"], "ram_bytes": d["ram_bytes"], "ram_source": d["ram_source"],
           "latency_ms_estimated": d["latency_ms"], "macs": c.macs, "recipe": c.recipe, "arch": c.arch}  # fmt: skip
    if data is not None and d["format"] == "tflm":
        out["tflm_test_accuracy"] = tflm_test_accuracy(d["file"], data)
    return out


def run_recipe(args, progress: Progress) -> list[dict]:
    from edgeshrink.tasks.registry import load_task

    data_dir = args.data_dir / DATA_SUBDIRS["mnist"]
    data = load_task("mnist-lenet5").data(data_dir)
    entries, weights = [], args.baseline
    for device in args.devices.split(","):
        out = args.runs_dir / f"lenet5-{device}"
        result = edgeshrink.search(
            task="mnist-lenet5", data_dir=data_dir, weights=weights, device=device, trials=args.trials,
            timeout=args.minutes * 60, max_epochs=args.max_epochs, reference="deep-compression", out=out,
            study=f"lenet5-{device}", seed=args.seed, threads=args.threads, progress=progress.enabled,
            per_layer=args.per_layer,
        )  # fmt: skip
        weights = out / "baseline.pt" if weights is None else weights
        ref = _point(result.reference, data)
        front = [_point(c, data) for c in result.front]
        better = [
            p for p in front if p["bytes"] < ref["bytes"] and p["tflm_test_accuracy"] >= ref["tflm_test_accuracy"]
        ]
        on_val = [p["trial"] for p in front if p["bytes"] < ref["bytes"] and p["val_accuracy"] >= ref["val_accuracy"]]
        entries.append({
            "part": "recipe", "device": device, "per_layer": args.per_layer,
            "search_minutes": _search_minutes(result),
            "trials": result.summary["finished"], "candidates": len(result.candidates),
            "feasible": result.summary["feasible"], "reference": ref, "front": front,
            "dominating": [p["trial"] for p in better], "dominates": bool(better), "out": str(out),
            "dominating_on_validation": on_val,
        })  # fmt: skip
    return entries


def _ort_latency(checkpoints: dict[str, Path], example: torch.Tensor, threads: int) -> dict[str, float]:
    """Batch-1 median latency in ms of each fp32 checkpoint exported to ONNX, timed interleaved in one process."""
    from edgeshrink.runtimes.onnxruntime import make_session, session_call
    from edgeshrink.runtimes.timing import time_calls_interleaved

    calls = {}
    for name, path in checkpoints.items():
        onnx = path.with_suffix(".onnx")
        edgeshrink.export(edgeshrink.load(path), onnx, verify_data=[example], threads=threads)
        calls[name] = session_call(make_session(onnx.read_bytes(), threads), example[:1].numpy())
    timings = time_calls_interleaved(calls, batch=1, runs=200, warmup=20, threads=threads)
    return {k: t.median_ms for k, t in timings.items()}


def run_nas(args, progress: Progress) -> list[dict]:
    from edgeshrink.autosearch.candidate import Evaluator
    from edgeshrink.autosearch.setup import task_data
    from edgeshrink.autosearch.spec import SearchSpec
    from edgeshrink.devices.catalogue import get_device
    from edgeshrink.tasks.registry import load_task

    data_dir = args.data_dir / DATA_SUBDIRS["fashion"]
    out = args.runs_dir / "nas-dscnn"
    result = edgeshrink.search(
        task="fashion-resnet8x4", data_dir=data_dir, family="ds-cnn", device="cortex-m7",
        objectives=("accuracy", "latency"), trials=args.nas_trials, timeout=args.nas_minutes * 60,
        max_epochs=args.nas_epochs, out=out, study="nas-dscnn", seed=args.seed, threads=args.threads,
        progress=progress.enabled,
    )  # fmt: skip
    task = load_task("fashion-resnet8x4")
    data = task_data(task, data_dir, None, args.seed)
    spec = SearchSpec(device="cortex-m7", family="ds-cnn", max_epochs=args.nas_epochs, seed=args.seed)
    evaluator = Evaluator(spec, get_device("cortex-m7"), data, None, threads=args.threads, train_config=task.train)
    zoo, refused = {}, {}
    for name, kwargs in ZOO.items():
        model = edgeshrink.create_model(name, input_shape=(1, 28, 28), num_classes=10, **kwargs)
        arch = {"model": name, "model_kwargs": {**kwargs, "num_classes": 10}, "input_shape": [1, 28, 28]}
        try:
            zoo[name] = evaluator.architecture(model, arch, out / "zoo" / name)
        except edgeshrink.EdgeshrinkError as exc:  # e.g. a TFLM file that does not reproduce the int8 model
            refused[name] = str(exc)
            progress.line(f"[nas] zoo {name}: not deployable on cortex-m7: {exc}")
    points = {f"trial {c.number}": c for c in result.front} | {f"zoo {k}": c for k, c in zoo.items()}
    latency = _ort_latency({k: Path(c.folder) / "model.pt" for k, c in points.items()}, data.example, args.threads)
    rows = [{"name": k, **_point(c), "ort_fp32_batch1_ms": latency[k]} for k, c in points.items()]
    return [{"part": "nas", "device": "cortex-m7", "family": "ds-cnn", "search_minutes": _search_minutes(result),
             "trials": result.summary["finished"], "candidates": len(result.candidates), "rows": rows,
             "outcomes": _nas_outcomes(result), "zoo_refused": refused, "out": str(out)}]  # fmt: skip


def markdown(entries: list[dict]) -> str:
    lines = []
    for e in entries:
        if e["part"] == "recipe":
            ref = e["reference"]
            spaces = "per-layer" if e["per_layer"] else "global"
            lines += [f"\n### LeNet-5 for {e['device']}, {spaces} spaces: {e['trials']} trials in "
                      f"{e['search_minutes']:.1f} min",
                      "| point | val | test (PyTorch) | test (TFLM) | TFLM file | RAM (arena) | est. latency |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
            for p in [*e["front"], {**ref, "trial": "deep-compression"}]:
                lines.append(f"| {p['trial']} | {p['val_accuracy']:.2f}% | {p['test_accuracy']:.2f}% | "
                             f"{p['tflm_test_accuracy']:.2f}% | {p['bytes']:,} B | {p['ram_bytes']:,} B | "
                             f"{p['latency_ms_estimated']:.2f} ms |")  # fmt: skip
            lines.append(f"\ndominates deep-compression: {e['dominates']} (trials {e['dominating']})")
        elif e["part"] == "lottery":
            lines += [f"\n### Lottery tickets, LeNet-300-100 ({e['iterations_per_run']:,} iterations per run)",
                      lottery.markdown(e)]  # fmt: skip
        elif e["part"] == "distributed":
            one, two = e["one_worker"], e["two_workers"]
            lines.append(f"\n### Distributed: {one['trials_per_hour']:.1f} trials/h with 1 worker, "
                         f"{two['trials_per_hour']:.1f} with 2 ({e['ratio']:.2f}x); left running "
                         f"{two['left_running']}, failed {two['failed']}, "
                         f"measured twice {two['measured_twice']}")  # fmt: skip
        elif e["part"] == "nas":
            lines += [f"\n### DS-CNN NAS for {e['device']}: {e['trials']} trials in {e['search_minutes']:.1f} min",
                      "| model | test (int8 PyTorch = TFLM file) | MACs | TFLM file | est. latency M7 | ORT fp32 b1 |",
                      "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
            for r in e["rows"]:
                lines.append(f"| {r['name']} | {r['test_accuracy']:.2f}% | {r['macs']:,} | {r['bytes']:,} B | "
                             f"{r['latency_ms_estimated']:.2f} ms | {r['ort_fp32_batch1_ms']:.3f} ms |")  # fmt: skip
            lines.append(f"\ntrials: {json.dumps(e['outcomes'])}; zoo refused: {json.dumps(e['zoo_refused'])}")
        else:
            lines.append(f"\n{e['part']}: " + json.dumps({k: v for k, v in e.items() if k != "rows"})[:2000])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=Path("search.json"))
    parser.add_argument("--parts", default="recipe,nas,lottery,distributed")
    parser.add_argument("--devices", default="cortex-m7,cortex-m4")
    parser.add_argument("--minutes", type=float, default=30.0, help="recipe search minutes per device")
    parser.add_argument("--trials", type=int, default=1000, help="recipe search: at most this many trials")
    parser.add_argument("--max-epochs", type=int, default=3, help="recipe search: fine-tuning epochs per run")
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="recipe search: sparsity and bits per layer (default: one sparsity, bits per kind)",
    )
    parser.add_argument("--baseline", type=Path, default=None, help="recipe search: LeNet-5 checkpoint to compress")
    parser.add_argument("--nas-trials", type=int, default=1000)
    parser.add_argument("--nas-minutes", type=float, default=30.0)
    parser.add_argument("--nas-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/search-benchmark"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    lottery.add_options(parser)
    search_distributed.add_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    progress, entries = Progress(not args.quiet), []
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    started = time.perf_counter()
    for part in parts:
        if part == "recipe":
            entries += run_recipe(args, progress)
        elif part == "nas":
            entries += run_nas(args, progress)
        elif part == "lottery":
            entries += lottery.run_lottery(args, progress)
        elif part == "distributed":
            entries += search_distributed.run_distributed(args, progress)
        else:
            parser.error(f"unknown part {part!r}")
    payload = {"benchmark": "search", "command": " ".join(sys.argv), "environment": environment(),
               "seconds": time.perf_counter() - started, "results": entries}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str))
    print(markdown(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
