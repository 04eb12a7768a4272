"""Structured pruning and distillation on Fashion-MNIST: smaller and really faster models.

    python benchmarks/structured.py --data-dir ../shared/data --out results.json

For ResNet-8 at 4x width and MobileNetV2: train the baseline (or load it from --cache-dir), remove
channels until the MACs fall by --target-macs-reduction (the `channels` stage), fine-tune the pruned
model without and with distillation from the baseline, and measure accuracy on the 10,000 test
images, parameters, MACs, .onnx bytes and ONNX Runtime latency at batch 1 and 32 (every model's
session timed interleaved with the others in this one process, twice: with one process-wide thread
pool that spins as ONNX Runtime does by default, the figure the issue bars use, and with a pool per
session without spinning). Then ResNet-8 at 1x width is trained from scratch and distilled from the
4x teacher with the same epochs (20) and seed, once per --student-seeds seed. Writes JSON and prints
markdown tables.

Defaults are the tasks' own (10,000 training images, 6 baseline epochs), channel counts in multiples
of 16 (ONNX Runtime's NCHWc block on AVX-512 CPUs; 8 on AVX2), 2 fine-tuning epochs and distillation
at T 4, alpha 0.5. On 2 Zen 5 cores the whole run takes about 24 minutes, 15 once the baselines are
cached in --cache-dir (shared with benchmarks/quantization.py); the student comparison is 6 of them
(`--models ""` runs it alone, `--no-student` skips it).
For a smoke test: --train-subset 256 --baseline-epochs 1 --finetune-epochs 1 --student-epochs 1
--student-seeds 0 --test-subset 500 --runs 5.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import add_run_options, baseline, task_data_dir

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.environment import environment
from edgeshrink.io.writer import save_checkpoint
from edgeshrink.mac_count import count_macs
from edgeshrink.runtimes.onnxruntime import make_session, time_interleaved
from edgeshrink.stages.base import StageContext, apply_stage
from edgeshrink.stages.channels import ChannelsConfig
from edgeshrink.tasks.data import Split
from edgeshrink.tasks.registry import load_task
from edgeshrink.tasks.zoo import create_model
from edgeshrink.train import DistillConfig, Progress, TrainConfig, evaluate, fit, seed_everything

TASKS = {"resnet8x4": "fashion-resnet8x4", "mobilenetv2": "fashion-mobilenetv2"}
# thread pools timed, in this order (ONNX Runtime allows no own-pool session once the shared pool exists),
# and the suffix of their result keys: "latency" is the shared pool's, "latency_own_pools" the other
POOL_SUFFIX = {"session": "_own_pools", "shared": ""}
BATCH_SIZES = (1, 32)


# ---------------------------------------------------------------- ONNX export and timing


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> dict:
    """The library's ONNX export (dynamic batch), verified in ONNX Runtime at every timed batch size."""
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(b, *input_shape, generator=generator) for b in BATCH_SIZES]
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    result = edgeshrink.export(model, path, batches[0], verify_data=batches)
    return {"path": str(path), "bytes": result.bytes, "parity": result.parity}


def time_sessions(
    paths: dict[str, Path], input_shape: tuple[int, ...], runs: int, warmup: int, threads: int, pool: str
) -> dict:
    """Median and p90 latency (ms) of every model at every batch size, the models interleaved run by run."""
    sessions = {name: make_session(path, threads, pool=pool) for name, path in paths.items()}
    rng = np.random.default_rng(0)
    out: dict[str, dict] = {name: {} for name in sessions}
    for b in BATCH_SIZES:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        for name, timing in time_interleaved(sessions, x, runs=runs, warmup=warmup, threads=threads).items():
            out[name][f"batch{b}"] = timing.to_dict()
    return out


# ---------------------------------------------------------------- the experiment


def finetune_config(epochs: int, distill: DistillConfig | None) -> TrainConfig:
    return TrainConfig(epochs=epochs, optimizer="adamw", lr=1e-3, weight_decay=5e-4, distill=distill)


def eval_split(data, n: int | None) -> Split:
    return data.test if n is None else data.test.subset(n, seed=0)


def with_subset(task, n: int | None):
    """The task, training on `n` images instead of its own subset when `n` is given."""
    return task if n is None else dataclasses.replace(task, train_subset=n)


def figures(model: torch.nn.Module, shape: tuple[int, ...]) -> dict:
    return {"parameters": sum(p.numel() for p in model.parameters()), "macs": count_macs(model, shape)}


def run_model(name: str, args, progress: Progress, onnx_paths: dict[str, Path]) -> tuple[dict, torch.nn.Module]:
    """Baseline, pruning, fine-tuning with and without distillation for one model; returns (entry, baseline)."""
    task = load_task(TASKS[name])
    data = task.data(task_data_dir(args.data_dir, task))
    test = eval_split(data, args.test_subset).loader(1000)
    shape = task.input_shape
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    model, train_seconds, cached = baseline(
        task.name, data, args.cache_dir, args.seed, progress, args.baseline_epochs, args.train_subset, validate=False
    )
    seconds["baseline_training"] = train_seconds
    model.eval()
    entry: dict = {"model": name, "task": task.name, "baseline_cached": cached}
    entry["baseline"] = {"accuracy": evaluate(model, test), **figures(model, shape)}

    train = with_subset(task, args.train_subset).train_loader(data, args.seed)
    t0 = time.perf_counter()
    pruned = copy.deepcopy(model)
    ctx = StageContext(
        finetune=None,
        evaluate=None,
        progress=progress,
        example_input=data.test.inputs[:1],
        batches=lambda n: list(itertools.islice(iter(train), n)),
    )
    cfg = ChannelsConfig(
        criterion=args.criterion,
        target_macs_reduction=args.target_macs_reduction,
        round_to=args.round_to,
        finetune=TrainConfig(epochs=0),
    )
    after = apply_stage(Artifact(pruned, Arch.parse(task.arch), example_input=data.test.inputs[:1]), cfg, ctx)
    record, arch = after.records[-1], after.arch
    seconds["pruning"] = time.perf_counter() - t0
    after_pruning = evaluate(pruned, test)

    variants = {}
    for label, distill in (("finetuned", None), ("distilled", args.distill)):
        t0 = time.perf_counter()
        tuned = copy.deepcopy(pruned)
        seed_everything(args.seed)
        fit(tuned, train, finetune_config(args.finetune_epochs, distill), stage=f"{name} {label}", progress=progress,
            teacher=model if distill else None)  # fmt: skip
        seconds[f"finetune_{label}"] = time.perf_counter() - t0
        variants[label] = tuned.eval()

    # The pruned architecture rebuilt from its recorded edits alone computes the same outputs (up to the
    # rounding of another memory layout: the trained model runs channels-last).
    out_dir = args.runs_dir / name
    checkpoint = out_dir / "pruned-distilled.pt"
    save_checkpoint(checkpoint, Artifact(variants["distilled"], arch, example_input=data.test.inputs[:1]))
    rebuilt = edgeshrink.load(checkpoint).model.eval()  # the zoo model, edits replayed from the file alone
    x = data.test.inputs[:8]
    with torch.no_grad():
        rebuild_diff = float((rebuilt(x) - variants["distilled"](x)).abs().max())

    entry["pruned"] = {
        **figures(variants["distilled"], shape),
        "accuracy_after_pruning": after_pruning,
        "accuracy_finetuned": evaluate(variants["finetuned"], test),
        "accuracy_distilled": evaluate(variants["distilled"], test),
        "finetune_epochs": args.finetune_epochs,
        "channels_stage": {"notes": record.notes, "groups": record.layers, "edits": len(record.edits)},
        "rebuilt_from_edits_max_abs_diff": rebuild_diff,
        "checkpoint": str(out_dir / "pruned-distilled.pt"),
    }
    entry["pruned"]["macs_ratio"] = entry["pruned"]["macs"] / entry["baseline"]["macs"]
    for key, m in (("baseline", model), ("pruned", variants["distilled"])):
        path = out_dir / f"{key}.onnx"
        entry[key]["onnx"] = export_onnx(m, shape, path)
        onnx_paths[f"{name}/{key}"] = path
    seconds["total"] = time.perf_counter() - started
    entry["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return entry, model


def run_student(teacher: torch.nn.Module, args, progress: Progress, onnx_paths: dict[str, Path]) -> dict:
    """ResNet-8 at 1x width: from scratch and distilled from the 4x teacher, same epochs, for each seed."""
    task = load_task(TASKS["resnet8x4"])
    data = task.data(task_data_dir(args.data_dir, task))
    test = eval_split(data, args.test_subset).loader(1000)
    task = with_subset(task, args.train_subset)
    cfg = task.train.model_copy(update={"epochs": args.student_epochs})
    out: dict = {
        "student": "resnet8 (width 1)",
        "teacher": "resnet8x4 baseline",
        "epochs": args.student_epochs,
        "distill": args.distill.model_dump(),
        "per_seed": [],
    }
    for seed in args.student_seeds:
        row: dict = {"seed": seed}
        for label, distill in (("scratch", False), ("distilled", True)):
            started = time.perf_counter()
            seed_everything(seed)
            student = create_model("resnet8", input_shape=task.input_shape)
            train_cfg = cfg.model_copy(update={"distill": args.distill if distill else None})
            fit(student, task.train_loader(data, seed), train_cfg, stage=f"student {label} seed {seed}",
                progress=progress, teacher=teacher if distill else None)  # fmt: skip
            row[f"accuracy_{label}"] = evaluate(student, test)
            row[f"seconds_{label}"] = round(time.perf_counter() - started, 1)
        row["gain"] = row["accuracy_distilled"] - row["accuracy_scratch"]
        progress.line(f"[student seed {seed}] scratch {row['accuracy_scratch']:.2f}%, "
                      f"distilled {row['accuracy_distilled']:.2f}% ({row['gain']:+.2f})")  # fmt: skip
        out["per_seed"].append(row)
    for key in ("accuracy_scratch", "accuracy_distilled", "gain"):
        values = [r[key] for r in out["per_seed"]]
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out.update(figures(student, task.input_shape))
    out["teacher_accuracy"] = evaluate(teacher, test)
    out["onnx"] = export_onnx(student, task.input_shape, args.runs_dir / "student.onnx")
    onnx_paths["student/resnet8"] = args.runs_dir / "student.onnx"
    # beats: higher on average and on every seed (a single seed's difference can be noise)
    out["distilled_beats_scratch"] = out["gain"] > 0 and all(r["gain"] > 0 for r in out["per_seed"])
    return out


def add_latency(entries: list[dict], student: dict | None, latency: dict[str, dict]) -> None:
    """Latency and pruned/unpruned ratios per thread pool ("latency": the shared spinning pool,
    "latency_own_pools": every session with its own pool, no spinning)."""
    for e in entries:
        targets = {}
        for pool, times in latency.items():
            key_suffix = POOL_SUFFIX[pool]
            for key in ("baseline", "pruned"):
                e[key]["latency" + key_suffix] = times[f"{e['model']}/{key}"]
            ratio = {
                b: e["pruned"]["latency" + key_suffix][b]["median_ms"]
                / e["baseline"]["latency" + key_suffix][b]["median_ms"]
                for b in e["baseline"]["latency" + key_suffix]
            }
            e["pruned"]["latency_ratio" + key_suffix] = ratio
            targets["latency_ratio_at_most_0.6" + key_suffix] = all(r <= 0.6 for r in ratio.values())
        targets["distilled_within_0.5_points"] = e["pruned"]["accuracy_distilled"] >= e["baseline"]["accuracy"] - 0.5
        e["issue_targets"] = targets
    if student is not None:
        for pool, times in latency.items():
            student["latency" + POOL_SUFFIX[pool]] = times["student/resnet8"]


def markdown(entries: list[dict], student: dict | None) -> str:
    lines = [
        "| model | variant | accuracy | parameters | MACs | .onnx KB | ORT batch 1 ms (p90) | ORT batch 32 ms (p90) "
        "| own pools, no spinning: batch 1 / 32 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ] if entries else []  # fmt: skip

    def lat(v: dict, b: str, ratio: dict | None) -> str:
        text = f"{v['latency'][b]['median_ms']:.2f} ({v['latency'][b]['p90_ms']:.2f})"
        return text + (f", {ratio[b]:.2f}x" if ratio else "")

    def own(v: dict, ratio: dict | None) -> str:
        ms = [v["latency_own_pools"][b]["median_ms"] for b in ("batch1", "batch32")]
        text = f"{ms[0]:.2f} / {ms[1]:.2f}"
        return text + (f", {ratio['batch1']:.2f}x / {ratio['batch32']:.2f}x" if ratio else "")

    for e in entries:
        b, p = e["baseline"], e["pruned"]
        lines.append(
            f"| {e['model']} | unpruned | {b['accuracy']:.2f}% | {b['parameters']:,} | {b['macs'] / 1e6:.1f}M | "
            f"{b['onnx']['bytes'] / 1000:.0f} | {lat(b, 'batch1', None)} | {lat(b, 'batch32', None)} | {own(b, None)} |"
        )
        arch = (
            f"{p['parameters']:,} | {p['macs'] / 1e6:.1f}M ({p['macs_ratio']:.2f}x) | {p['onnx']['bytes'] / 1000:.0f}"
        )
        timing = f"{lat(p, 'batch1', p['latency_ratio'])} | {lat(p, 'batch32', p['latency_ratio'])} | "
        timing += own(p, p["latency_ratio_own_pools"])
        for label, key in (
            ("channels removed", "accuracy_after_pruning"),
            (f"+ fine-tune {p['finetune_epochs']} ep", "accuracy_finetuned"),
            (f"+ fine-tune {p['finetune_epochs']} ep, distilled", "accuracy_distilled"),
        ):
            lines.append(f"| {e['model']} | {label} | {p[key]:.2f}% | {arch} | {timing} |")
    if student is not None:
        d = student["distill"]
        lines += [
            "",
            f"Student {student['student']}, {student['parameters']:,} parameters, {student['macs'] / 1e6:.1f}M MACs, "
            f"{student['epochs']} epochs; distilled from the resnet8x4 teacher ({student['teacher_accuracy']:.2f}%) "
            f"at T {d['temperature']:g}, alpha {d['alpha']:g}.",
            "",
            "| seed | from scratch | distilled | gain |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['seed']} | {r['accuracy_scratch']:.2f}% | {r['accuracy_distilled']:.2f}% | {r['gain']:+.2f} |"
            for r in student["per_seed"]
        ]
        lines.append(
            f"| mean (std) | {student['accuracy_scratch']:.2f}% ({student['accuracy_scratch_std']:.2f}) | "
            f"{student['accuracy_distilled']:.2f}% ({student['accuracy_distilled_std']:.2f}) | "
            f"{student['gain']:+.2f} ({student['gain_std']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="folder with the Fashion-MNIST IDX files (or its parent)"
    )
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument(
        "--models", default="resnet8x4,mobilenetv2", help='models to prune; empty (""): the student comparison only'
    )
    parser.add_argument(
        "--baseline-epochs", type=int, default=None, help="epochs of baseline training (default: the task's)"
    )
    parser.add_argument(
        "--train-subset", type=int, default=None, help="training images, a fixed random subset (default: the task's)"
    )
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--student-epochs",
        type=int,
        default=20,
        help="epochs of both students (distillation needs more than the teacher's 6: at 6 it does not gain)",
    )
    parser.add_argument("--student-seeds", default="0,1,2", help="train both students once per seed (comma-separated)")
    parser.add_argument("--distill-temperature", type=float, default=4.0, help="soft-target temperature")
    parser.add_argument(
        "--distill-alpha", type=float, default=0.5, help="weight of the soft-target loss (0.5: best measured here)"
    )
    parser.add_argument("--target-macs-reduction", type=float, default=0.5)
    parser.add_argument("--criterion", choices=["l1", "bn_scale", "taylor"], default="l1")
    parser.add_argument(
        "--round-to", type=int, default=16, help="keep channel counts a multiple of this (16: AVX-512 NCHWc blocks)"
    )
    parser.add_argument("--test-subset", type=int, default=None, help="smoke tests only: fewer test images")
    parser.add_argument("--no-student", action="store_true", help="skip the student comparison")
    add_run_options(parser, "runs/structured-benchmark")
    args = parser.parse_args(argv)
    try:
        args.student_seeds = [int(v) for v in args.student_seeds.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--student-seeds takes comma-separated integers, not {args.student_seeds!r}")
    if not args.student_seeds and not args.no_student:
        parser.error("--student-seeds is empty: give at least one seed, or --no-student")
    if args.distill_temperature <= 0 or not 0 <= args.distill_alpha <= 1:
        parser.error("--distill-temperature must be > 0 and --distill-alpha between 0 and 1")
    args.distill = DistillConfig(temperature=args.distill_temperature, alpha=args.distill_alpha)
    progress = Progress(not args.quiet)
    onnx_paths: dict[str, Path] = {}
    started = time.perf_counter()
    try:
        entries, teacher = [], None
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name not in TASKS:
                raise edgeshrink.EdgeshrinkError(f"unknown model {name!r}; choose from {', '.join(TASKS)}")
            entry, model = run_model(name, args, progress, onnx_paths)
            entries.append(entry)
            teacher = model if name == "resnet8x4" else teacher
        if teacher is None and not args.no_student:  # the student comparison alone: the cached 4x teacher
            task = load_task(TASKS["resnet8x4"])
            data = task.data(task_data_dir(args.data_dir, task))
            teacher = baseline(task.name, data, args.cache_dir, args.seed, progress, args.baseline_epochs,
                               args.train_subset, validate=False)[0].eval()  # fmt: skip
        student = None if args.no_student else run_student(teacher, args, progress, onnx_paths)
        progress.line(f"timing {len(onnx_paths)} ONNX models interleaved, {args.runs} runs each, two thread pools")
        shape = load_task(TASKS["resnet8x4"]).input_shape
        latency = {
            pool: time_sessions(onnx_paths, shape, args.runs, args.warmup, args.threads, pool) for pool in POOL_SUFFIX
        }
        add_latency(entries, student, latency)
    except edgeshrink.EdgeshrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import onnxruntime

    result = {
        "benchmark": "structured",
        "command": " ".join(sys.argv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "distill"},
        "environment": environment(),
        "latency_method": {
            "runtime": f"onnxruntime {onnxruntime.__version__}, CPUExecutionProvider",
            "threads": args.threads,
            "thread_pools": "latency: one process-wide pool shared by every session, ONNX Runtime's default "
            "spinning (what an app running one model sees); latency_own_pools: a pool per session, "
            "spinning off (session.intra_op.allow_spinning = 0)",
            "statistic": f"median and p90 of {args.runs} runs after {args.warmup} warm-up runs; "
            "the models interleaved run by run in one process, one batch size after the other",
            "export": "edgeshrink.export (torch.onnx.export, dynamo, dynamic batch), verified against PyTorch",
        },
        "accuracy_on": "Fashion-MNIST test set" + (f" (subset of {args.test_subset})" if args.test_subset else ""),
        "results": entries,
        "student": student,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(entries, student))
    return 0


if __name__ == "__main__":
    sys.exit(main())
