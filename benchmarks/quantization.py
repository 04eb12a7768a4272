"""Quantization benchmark: fp32, fp16, int8 PTQ, int8 QAT, W4A8, and the peers: ONNX Runtime's own
quantize_static, torchao PT2E, NNCF and brevitas (benchmarks/peers.py), each exported to ONNX, run in
ONNX Runtime on the test split and timed on this machine.

    python benchmarks/quantization.py --data-dir ../shared/data --out results.json

--data-dir holds mnist/ and fashion-mnist/ (the IDX files). For each model: accuracy of the exported
file in ONNX Runtime on the whole test split, .onnx bytes, latency at batch 1 and 64 with 2 threads
(median and p90 of --runs runs after warm-up, every variant timed in one process, interleaved run by
run, sessions without thread spinning), the latency ratio to fp32, and the top-1 agreement between
ONNX Runtime and the PyTorch model each file came from. All variants calibrate on the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import edgeshrink
from edgeshrink.recipes import Recipe, load_recipe
from edgeshrink.runtimes.onnxruntime import make_session, time_interleaved
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_TASKS, add_run_options, baseline, run_models, task_data_dir  # noqa: E402
from peers import PEERS, available_peers  # noqa: E402

VARIANTS = ("fp32", "fp16", "int8-ptq", "int8-qat", "w4a8", "ort-quantize-static", *PEERS)
INT8_PEERS = ("ort-quantize-static", *PEERS)
RECIPES = {"fp16": "fp16", "int8-ptq": "int8", "int8-qat": "int8-qat", "w4a8": "w4a8"}


def _with_epochs(recipe: Recipe, epochs: int | None) -> Recipe:
    """The recipe with every fine-tuning shortened to `epochs` (None: as written)."""
    if epochs is None:
        return recipe
    stages = []
    for stage in recipe.stages:
        tune = getattr(stage, "finetune", None)
        if tune is not None and tune.epochs > 0:
            stage = stage.model_copy(update={"finetune": tune.model_copy(update={"epochs": epochs})})
        stages.append(stage)
    return recipe.model_copy(update={"stages": stages})


def ort_accuracy(session, split, batch: int = 500) -> tuple[float, np.ndarray]:
    """Top-1 accuracy of an ONNX Runtime session on a split, and its predictions."""
    name = session.get_inputs()[0].name
    preds = np.concatenate([session.run(None, {name: x.numpy()})[0].argmax(1) for x in split.inputs.split(batch)])
    return 100.0 * float((preds == split.labels.numpy()).mean()), preds


def torch_predictions(model, split, batch: int = 500) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(x).argmax(1).numpy() for x in split.inputs.split(batch)])


def ort_quantize_static(fp32_path: Path, out: Path, calibration: torch.Tensor) -> None:
    """ONNX Runtime's own post-training quantization: QDQ, MinMax, per-channel, U8S8, same images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x.numpy()} for x in calibration.split(128)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    pre.unlink()


def run_peer(peer: str, model, fp32_path: Path, calibration: torch.Tensor, out: Path) -> Path:
    if peer == "ort-quantize-static":
        ort_quantize_static(fp32_path, out, calibration)
        return out
    return PEERS[peer](model, fp32_path, calibration, out)


def run_model(name: str, args, progress: Progress) -> dict:
    task = load_task(MODEL_TASKS[name])
    if args.train_subset is not None:
        task = dataclasses.replace(task, train_subset=args.train_subset)
    data = task.data(task_data_dir(args.data_dir, task))
    model, train_seconds, cached = baseline(
        MODEL_TASKS[name], data, args.cache_dir, args.seed, progress, args.baseline_epochs, args.train_subset
    )
    model.eval()
    calibration = data.train.subset(args.calibration_images, seed=args.seed)
    example = data.test.inputs[:1]
    verify = [data.test.inputs[: args.verify_examples]]
    files: dict[str, Path] = {}
    rows: dict[str, dict] = {}
    out_dir = args.runs_dir / name
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32_acc = evaluate(model, data.test.loader(1000))

    started = time.perf_counter()
    exported = edgeshrink.export(model, out_dir / "fp32.onnx", example, verify_data=verify)
    files["fp32"] = exported.path
    rows["fp32"] = {"torch_accuracy": fp32_acc, "export": exported.to_dict(), "seconds": time.perf_counter() - started}
    for variant, recipe_name in RECIPES.items():
        if variant not in args.variants:
            continue
        started = time.perf_counter()
        progress.line(f"[{name}] {variant}: compress with recipe {recipe_name}")
        recipe = _with_epochs(load_recipe(recipe_name), args.finetune_epochs)
        result = edgeshrink.compress(
            model,
            recipe,
            train_loader=task.train_loader(data, seed=args.seed),
            val_loader=data.test.loader(1000),
            calibration_loader=calibration.loader(128),
            out=out_dir / variant,
            seed=args.seed,
            arch=task.arch,
            progress=progress.enabled,
            baseline_accuracy=fp32_acc,
        )
        exported = edgeshrink.export(result, out_dir / f"{variant}.onnx", example, verify_data=verify)
        files[variant] = exported.path
        rows[variant] = {
            "torch_accuracy": result.report["container"]["accuracy"],
            "export": exported.to_dict(),
            "quantization": [row for s in result.report["stages"] for row in s["layers"] if s["stage"] == "quantize"],
            "notes": [n for s in result.report["stages"] for n in s["notes"]],
            "seconds": time.perf_counter() - started,
        }
        rows[variant]["_model"] = result.model
    for peer in (p for p in INT8_PEERS if p in args.variants):
        progress.line(f"[{name}] peer {peer}: int8 on the same {len(calibration.labels)} calibration images")
        started = time.perf_counter()
        try:
            files[peer] = run_peer(peer, model, files["fp32"], calibration.inputs, out_dir / f"{peer}.onnx")
            rows[peer] = {"torch_accuracy": None, "seconds": time.perf_counter() - started}
        except Exception as exc:  # a peer that cannot quantize this model is a result, reported as such
            rows[peer] = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}

    fp32_preds = torch_predictions(model, data.test)
    sessions = {v: make_session(p, threads=args.threads) for v, p in files.items()}
    for variant, session in sessions.items():
        progress.line(f"[{name}] {variant}: ONNX Runtime and PyTorch on {len(data.test.labels):,} test images")
        acc, preds = ort_accuracy(session, data.test)
        source = rows[variant].pop("_model", model if variant == "fp32" or variant in INT8_PEERS else None)
        reference = fp32_preds if source is model else torch_predictions(source, data.test)
        rows[variant].update(
            onnx_accuracy=acc,
            onnx_bytes=files[variant].stat().st_size,
            top1_agreement_with_torch=100.0 * float((preds == reference).mean()),
            agreement_reference="the fp32 PyTorch model" if source is model else "the compressed PyTorch model",
        )
    for batch in args.batches:
        progress.line(f"[{name}] timing {len(sessions)} files at batch {batch}, {args.runs} runs each, interleaved")
        x = data.test.inputs[:batch].numpy()
        timings = time_interleaved(sessions, x, runs=args.runs, warmup=args.warmup, threads=args.threads)
        for variant, timing in timings.items():
            rows[variant][f"latency_batch{batch}"] = timing.to_dict()
            rows[variant][f"latency_ratio_batch{batch}"] = timing.median_ms / timings["fp32"].median_ms
    entry = {
        "model": name,
        "task": task.name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "baseline_training_seconds": round(train_seconds, 1),
        "baseline_cached": cached,
        "variants": rows,
    }
    if args.calibration_seeds:
        entry["calibration_samples"] = calibration_samples(name, model, task, data, args, files["fp32"], rows, progress)
    return entry


def calibration_samples(name, model, task, data, args, fp32_path: Path, rows: dict, progress: Progress) -> dict:
    """int8 PTQ against every peer on other calibration samples (--calibration-seeds): the accuracy
    of one calibration sample moves by a few test images, so they are compared on several."""
    quantizers = ["int8-ptq"] + [p for p in INT8_PEERS if p in args.variants and "failed" not in rows[p]]
    per_seed = [{"seed": args.seed, **{q: rows[q]["onnx_accuracy"] for q in quantizers}}]
    out_dir = args.runs_dir / name / "calibration-samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    example = data.test.inputs[:1]
    for seed in args.calibration_seeds:
        progress.line(f"[{name}] calibration sample seed {seed}: int8 PTQ and {len(quantizers) - 1} peer(s)")
        calibration = data.train.subset(args.calibration_images, seed=seed)
        result = edgeshrink.compress(
            model, load_recipe(RECIPES["int8-ptq"]), calibration_loader=calibration.loader(128),
            out=out_dir / f"int8-ptq-seed{seed}", seed=args.seed, arch=task.arch, progress=False,
        )  # fmt: skip
        verify = [data.test.inputs[: args.verify_examples]]
        ptq = edgeshrink.export(result, out_dir / f"int8-ptq-seed{seed}.onnx", example, verify_data=verify)
        paths = {"int8-ptq": ptq.path}
        for peer in quantizers[1:]:
            paths[peer] = run_peer(peer, model, fp32_path, calibration.inputs, out_dir / f"{peer}-seed{seed}.onnx")
        per_seed.append(
            {
                "seed": seed,
                **{q: ort_accuracy(make_session(p, threads=args.threads), data.test)[0] for q, p in paths.items()},
            }
        )
    means = {q: float(np.mean([r[q] for r in per_seed])) for q in quantizers}
    best = max(quantizers[1:], key=means.get, default=None)
    return {
        "images": args.calibration_images,
        "per_seed": per_seed,
        "means": means,
        "best_peer": best,
        "mean_difference_to_best_peer": None if best is None else means["int8-ptq"] - means[best],
        "ptq_not_lower_than_best_peer_per_seed": None
        if best is None
        else sum(r["int8-ptq"] >= r[best] for r in per_seed),
    }


def _variant_line(e: dict, variant: str, r: dict, batches: list[int], fp32: float) -> str:
    if "failed" in r:
        return f"| {e['model']} | {variant} | failed: {r['failed'][:90]} |" + " |" * (4 + len(batches))
    cells = [
        f"{r[f'latency_batch{b}']['median_ms']:.3f} / {r[f'latency_batch{b}']['p90_ms']:.3f} "
        f"({r[f'latency_ratio_batch{b}']:.2f}x)"
        for b in batches
    ]
    return (
        f"| {e['model']} | {variant} | {r['onnx_accuracy']:.2f}% | {r['onnx_accuracy'] - fp32:+.2f} | "
        f"{r['onnx_bytes']:,} | " + " | ".join(cells) + f" | {r['top1_agreement_with_torch']:.2f}% |"
    )


def _calibration_table(e: dict) -> list[str]:
    c = e["calibration_samples"]
    names = list(c["means"])
    lines = ["", f"{e['model']}: ONNX Runtime accuracy by calibration sample ({c['images']} images each)", "",
             "| seed | " + " | ".join(names) + " |", "| --- " * (len(names) + 1) + "|"]  # fmt: skip
    lines += [f"| {r['seed']} | " + " | ".join(f"{r[n]:.2f}%" for n in names) + " |" for r in c["per_seed"]]
    lines.append("| mean | " + " | ".join(f"{c['means'][n]:.3f}%" for n in names) + " |")
    if c["best_peer"]:
        lines.append(
            f"int8 PTQ - best peer ({c['best_peer']}): {c['mean_difference_to_best_peer']:+.3f} points; not lower on "
            f"{c['ptq_not_lower_than_best_peer_per_seed']} of {len(c['per_seed'])} samples"
        )
    return lines


def markdown(entries: list[dict], batches: list[int]) -> str:
    head = "| model | variant | ONNX Runtime accuracy | vs fp32 | .onnx bytes | " + " | ".join(
        f"batch {b} median / p90 ms (x fp32)" for b in batches
    )
    lines = [head + " | top-1 agreement ORT vs PyTorch |", "| --- " * (6 + len(batches)) + "|"]
    for e in entries:
        fp32 = e["variants"]["fp32"]["onnx_accuracy"]
        lines += [_variant_line(e, v, r, batches, fp32) for v, r in e["variants"].items()]
    for e in entries:
        if e.get("calibration_samples"):
            lines += _calibration_table(e)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default="lenet5,resnet8x4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--finetune-epochs", type=int, default=None, help="override the recipes' QAT epochs")
    parser.add_argument("--baseline-epochs", type=int, default=None, help="override the task's baseline epochs")
    parser.add_argument("--train-subset", type=int, default=None, help="training images (baseline and QAT)")
    parser.add_argument("--calibration-images", type=int, default=2048)
    parser.add_argument("--verify-examples", type=int, default=2000)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument(
        "--calibration-seeds", default="", help="int8 PTQ vs quantize_static again on these calibration samples"
    )
    add_run_options(parser, "runs/quantization-benchmark")
    args = parser.parse_args(argv)
    args.variants = {v.strip() for v in args.variants.split(",")} | {"fp32"}
    args.batches = [int(b) for b in args.batches.split(",")]
    args.calibration_seeds = [int(x) for x in args.calibration_seeds.split(",") if x.strip()]
    if args.calibration_seeds and "int8-ptq" not in args.variants:
        parser.error("--calibration-seeds compares int8-ptq with the peers: keep int8-ptq in --variants")
    missing = {p: why for p, why in available_peers().items() if why and p in args.variants}
    if missing:
        parser.error("; ".join(missing.values()) + " (or leave the peer out of --variants)")
    return run_models("quantization", args, run_model, lambda entries: markdown(entries, args.batches))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
