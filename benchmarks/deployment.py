"""What ships to a device: for a microcontroller the TFLite Micro file with DECODE-compressed weights, beside the
.eshrink container and the plain int8 .tflite, for LeNet-300-100 and LeNet-5 after deep-compression and for an
int8-only LeNet-5 (MNIST); for a phone or a board the ExecuTorch programs (fp32 and int8, XNNPACK) of the
1.2M-parameter ResNet-8x4 on Fashion-MNIST (deployment_pte.py).

    python benchmarks/deployment.py --data-dir ../shared/data --out results.json

(--data-dir: the folder holding mnist/ and fashion-mnist/, or the MNIST folder itself for the TFLM rows.)

For each model: bytes of the container, the plain int8 .tflite and the TFLM file; the method chosen per
tensor; the arena TFLM's allocator reports; TFLM host latency (median of timed invokes); top-1 agreement
with the int8 PyTorch model and accuracy from the TFLM interpreter on the 10,000 test images; and whether
file and arena fit the Cortex-M4 and M7 of the device catalogue. The TFLM file is also written through
`edgeshrink.export(format="tflm")` (verified there) and must have the same bytes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

import edgeshrink
from edgeshrink.devices.catalogue import get_device
from edgeshrink.exporters.tflite import tflite_bytes
from edgeshrink.exporters.tflm import tflm_bytes
from edgeshrink.runtimes.tflm import TFLMSession, minimal_arena
from edgeshrink.runtimes.timing import time_calls
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_run_options, baseline, run_models, task_data_dir  # noqa: E402
from deployment_pte import TASK as PTE_TASK  # noqa: E402
from deployment_pte import markdown_pte, run_pte  # noqa: E402
from deployment_pte import quality as runtime_quality  # noqa: E402

MODELS = {  # name -> (task, recipe)
    "lenet300-dc": ("mnist-lenet300", "deep-compression"),
    "lenet5-dc": ("mnist-lenet5", "deep-compression"),
    "lenet5-int8": ("mnist-lenet5", "int8"),
    "resnet8x4-pte": (PTE_TASK, "int8"),
}
DEVICES = ("cortex-m4", "cortex-m7")


def _compressed(name: str, args, progress):
    """The run folder's artifact, compressing now unless --reuse-runs finds it."""
    task_name, recipe = MODELS[name]
    task = load_task(task_name)
    data = task.data(task_data_dir(args.data_dir, task))
    folder = args.runs_dir / name
    if not (args.reuse_runs and (folder / "model.eshrink").is_file()):
        model, _, _ = baseline(task.name, data, args.cache_dir, args.seed, progress)
        edgeshrink.compress(
            model,
            recipe,
            out=folder,
            seed=args.seed,
            arch=task.arch,
            progress=progress.enabled,
            train_loader=data.train.loader(task.batch_size, shuffle=True, seed=args.seed),
            val_loader=data.test.loader(1000),
        )
    return task, data, folder, edgeshrink.load(folder)


def _tflm_accuracy(session: TFLMSession, reference, inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    q = runtime_quality(session, reference, inputs, labels)
    return {"tflm_accuracy": q.pop("accuracy"), "int8_torch_accuracy": q.pop("torch_accuracy"), **q}


def _latency_ms(session: TFLMSession, x: np.ndarray, runs: int, warmup: int) -> dict:
    q = session.quantize(x)
    times = [t * 1e3 for t in time_calls(lambda: session.run_raw(q), warmup=warmup, runs=runs)]
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": runs}


def run_model(name: str, args, progress) -> dict:
    if name.endswith("-pte"):
        return run_pte(name, args, progress, task_data_dir, baseline)
    task, data, folder, art = _compressed(name, args, progress)
    calibration = list(data.train.inputs[:512].split(64))
    example = data.test.inputs[:1]
    plain, _, _ = tflite_bytes(art.model, example, "int8", calibration)  # what --format tflite --quantize int8 writes
    built = tflm_bytes(art.model, example, calibration)
    exported = edgeshrink.export(
        art, folder / "model.tflm.tflite", format="tflm", verify_data=[data.test.inputs[:500]], calibration=calibration
    )
    if exported.bytes != len(built.data):
        raise RuntimeError(f"export wrote {exported.bytes} B, the benchmark built {len(built.data)} B: not one file")
    session = built.session
    arena = minimal_arena(built.data)
    quality = _tflm_accuracy(session, built.reference, data.test.inputs, data.test.labels)
    container = (folder / "model.eshrink").stat().st_size
    fits = {}
    for d in DEVICES:
        device = get_device(d)
        fits[d] = {
            "flash_bytes": device.flash_bytes,
            "ram_bytes": device.ram_bytes,
            "file_fits_flash": len(built.data) <= device.flash_bytes,
            "arena_fits_ram": arena <= device.ram_bytes,
        }
    return {
        "model": name,
        "task": task.name,
        "recipe": MODELS[name][1],
        "float_accuracy": evaluate(art.model, data.test.loader(1000)),
        "container_bytes": container,
        "plain_int8_tflite_bytes": len(plain),
        "uncompressed_int8_bytes": len(built.plain),
        "tflm_bytes": len(built.data),
        "tflm_vs_plain": len(built.data) / len(plain),
        "tflm_vs_container": len(built.data) / container,
        "arena_bytes": arena,
        "arena_bytes_plain_file": minimal_arena(plain),
        "decode_bytes_max": max((c.decoded_bytes for c in built.choices), default=0),
        "notes": built.notes,
        "tensors": [c.to_dict() for c in built.choices],
        "latency_ms": _latency_ms(session, example.numpy(), args.runs, args.warmup),
        "latency_ms_plain_file": _latency_ms(TFLMSession(plain), example.numpy(), args.runs, args.warmup),
        **quality,
        "export_parity": exported.parity,
        "devices": fits,
    }


def markdown(entries: list[dict]) -> str:
    pte = [e for e in entries if e.get("kind") == "executorch"]
    tflm = [e for e in entries if e.get("kind") != "executorch"]
    return "\n\n".join(t for t in (markdown_tflm(tflm) if tflm else "", markdown_pte(pte) if pte else "") if t)


def markdown_tflm(entries: list[dict]) -> str:
    lines = [
        "| model | container | plain int8 .tflite | TFLM file | TFLM / plain | TFLM / container | methods | arena "
        "(plain file) | TFLM latency (plain) | accuracy TFLM / int8 torch | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries:
        methods = ", ".join(f"{t['layer']}: {t['method']}" for t in e["tensors"])
        lines.append(
            f"| {e['model']} | {e['container_bytes']:,} B | {e['plain_int8_tflite_bytes']:,} B | "
            f"{e['tflm_bytes']:,} B | "
            f"{e['tflm_vs_plain']:.3f}x | {e['tflm_vs_container']:.2f}x | {methods} | {e['arena_bytes']:,} B "
            f"({e['arena_bytes_plain_file']:,} B) | {e['latency_ms']['median']:.2f} ms "
            f"({e['latency_ms_plain_file']['median']:.2f} ms) | {e['tflm_accuracy']:.2f}% / "
            f"{e['int8_torch_accuracy']:.2f}% | {e['top1_agreement']:.2f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="folder holding mnist/ and fashion-mnist/ (or the MNIST files)"
    )
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--reuse-runs", action="store_true", help="use run folders a previous run wrote")
    add_run_options(parser, "runs/deployment-benchmark")
    args = parser.parse_args(argv)
    return run_models("deployment", args, run_model, markdown, choices=MODELS)


if __name__ == "__main__":
    sys.exit(main())
