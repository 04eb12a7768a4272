"""`compress`: run a recipe's stages on a model, write the container, prove it decodes, report.

Works on any `nn.Module`: the built-in tasks only supply a model, loaders and a training setup.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeshrink.architecture import replay_channel_edits
from edgeshrink.encode.container import PackResult, atomic_write, read_container, state_to_bytes
from edgeshrink.errors import ConfigError, FormatError
from edgeshrink.measure.counts import parameter_counts
from edgeshrink.recipes import Recipe, load_recipe
from edgeshrink.report.histograms import WeightHistograms
from edgeshrink.report.layers import entropy_summary, layer_table, to_markdown
from edgeshrink.report.provenance import environment
from edgeshrink.restore import restore_model
from edgeshrink.scope import select_layers
from edgeshrink.stages.base import StageContext, apply_stage
from edgeshrink.stages.encode import EncodeConfig, index_bits_for
from edgeshrink.train import Progress, TrainConfig, evaluate, fit, seed_everything
from edgeshrink.weights import effective_state_dict, has_parametrizations

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
CONTAINER_NAME = "model.eshrink"


@dataclass
class CompressResult:
    """The compressed model (masks and codebooks attached), its report (a dict, also report.json) and
    the container path."""

    model: nn.Module
    report: dict
    path: Path
    out_dir: Path


def _finetuner(
    train_loader: Batches | None,
    val_loader: Batches | None,
    train_fn: Callable[[nn.Module, int], object] | None,
    progress: Progress,
    teacher: nn.Module,
):
    if train_fn is not None and train_loader is not None:
        raise ConfigError("pass either train_loader= or train_fn=, not both")
    if train_fn is not None:

        def run_user(model: nn.Module, cfg: TrainConfig, label: str) -> list[dict]:
            if cfg.distill is not None:
                raise ConfigError(
                    f"{label}: distill runs in the built-in training loop; pass train_loader= "
                    "instead of train_fn=, or remove distill from the recipe"
                )
            progress.line(f"[{label}] {cfg.epochs} epoch(s) with your train_fn")
            train_fn(model, cfg.epochs)
            return [{"epochs": cfg.epochs, "train_fn": getattr(train_fn, "__name__", "train_fn")}]

        return run_user
    if train_loader is not None:
        return lambda model, cfg, label: fit(
            model, train_loader, cfg, val_loader, stage=label, progress=progress, teacher=teacher
        )
    return None


def _batch_source(loader: Batches | None) -> Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]] | None:
    """n -> the first n batches of `loader` (for importance and sensitivity estimates)."""
    if loader is None:
        return None
    return lambda n: list(itertools.islice(iter(loader), n))


def _encode_config(recipe: Recipe) -> tuple[EncodeConfig, bool]:
    encodes = [s for s in recipe.stages if isinstance(s, EncodeConfig)]
    if len(encodes) > 1:
        raise ConfigError(f"recipe {recipe.name!r} has {len(encodes)} encode stages; it needs at most one")
    if encodes and recipe.stages[-1] is not encodes[0]:
        raise ConfigError(f"recipe {recipe.name!r}: the encode stage must be the last stage")
    return (encodes[0], True) if encodes else (EncodeConfig(), False)


def _sizes(model: nn.Module, encode_cfg: EncodeConfig) -> PackResult:
    return state_to_bytes(effective_state_dict(model), coding="fixed", index_bits=index_bits_for(model, encode_cfg))


def compress(
    model: nn.Module,
    recipe: str | Path | Recipe = "deep-compression",
    *,
    train_loader: Batches | None = None,
    val_loader: Batches | None = None,
    train_fn: Callable[[nn.Module, int], object] | None = None,
    eval_fn: Callable[[nn.Module], float] | None = None,
    out: str | Path = "runs/compressed",
    seed: int = 0,
    arch: dict | None = None,
    progress: bool = True,
    baseline_accuracy: float | None = None,
    calibration_loader: Batches | None = None,
) -> CompressResult:
    """Compress a trained `model` with a recipe (a built-in name, a TOML path or a `Recipe`).

    Fine-tuning uses `train_loader` with the built-in loop, or your `train_fn(model, epochs)`.
    Accuracy is measured with `eval_fn(model) -> percent`, or top-1 on `val_loader`. The input model
    is left untouched. Quantization calibrates on `calibration_loader` (default: `train_loader`, else
    `val_loader`). Writes `out/model.eshrink`, `out/report.json` and `out/layers.md`.
    """
    recipe = load_recipe(recipe)
    if has_parametrizations(model):
        raise ConfigError(
            "compress needs a plain trained model (no masks or codebooks attached); "
            "to continue from a container, unpack it into a fresh model first"
        )
    encode_cfg, has_encode = _encode_config(recipe)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(progress)
    seed_everything(seed)
    template = copy.deepcopy(model).eval()  # a fresh instance to rebuild from the container
    working = copy.deepcopy(model).eval()
    teacher = copy.deepcopy(model).eval()  # the uncompressed model, for stages that distil
    for p in teacher.parameters():
        p.requires_grad_(False)
    if eval_fn is None and val_loader is not None:

        def eval_fn(m: nn.Module) -> float:
            return evaluate(m, val_loader)

    first = next(iter(val_loader), None) if val_loader is not None else None  # never draws from train_loader
    ctx = StageContext(
        finetune=_finetuner(train_loader, val_loader, train_fn, bar, teacher),
        evaluate=eval_fn,
        progress=bar,
        seed=seed,
        example_input=None if first is None else first[0][:1],
        batches=_batch_source(train_loader if train_loader is not None else val_loader),
    )
    container_path = out_dir / CONTAINER_NAME
    edits_before = len(((arch or {}).get("channels") or {}).get("edits", []))
    ctx.extras.update(
        container_path=container_path,
        arch=arch,
        meta={"recipe": recipe.name, "seed": seed},
        calibration=next((b for b in (calibration_loader, train_loader, val_loader) if b is not None), None),
    )

    if baseline_accuracy is None:
        baseline_accuracy = ctx.accuracy(working)
    baseline = {"accuracy": baseline_accuracy, **parameter_counts(working)}
    baseline_pack = _sizes(working, encode_cfg)
    baseline["dense_bytes"] = baseline_pack.dense_bytes
    histograms = WeightHistograms(working)
    histograms.add("baseline", working)
    stages = []
    configs = list(recipe.stages) if has_encode else [*recipe.stages, encode_cfg]
    for i, cfg in enumerate(configs, 1):
        bar.line(f"stage {i}/{len(configs)}: {cfg.type}")
        record = apply_stage(working, cfg, ctx).model_dump()
        working = ctx.extras.pop("replace_model", working)  # quantization returns a new (traced) model
        record.update(parameter_counts(working))
        if cfg.type != "encode":
            histograms.add(cfg.type, working)
        if cfg.type == "encode":
            packed: PackResult = ctx.extras["pack_result"]
            record["size"] = {"bytes": packed.nbytes, "coding": cfg.coding, "what": "the container file as written"}
        else:
            size = _sizes(working, encode_cfg).nbytes
            record["size"] = {
                "bytes": size,
                "coding": "fixed",
                "what": "container serialised with fixed-width codes (measured bytes)",
            }
        record["size"]["ratio"] = baseline["dense_bytes"] / record["size"]["bytes"]
        if not has_encode and cfg.type == "encode":
            record["notes"].append("implicit: the recipe has no encode stage, so the default one ran")
        stages.append(record)
        acc = f", accuracy {record['accuracy']:.2f}%" if record["accuracy"] is not None else ""
        bar.line(f"stage {cfg.type}: {record['size']['bytes']:,} bytes ({record['size']['ratio']:.1f}x){acc}")

    packed = ctx.extras["pack_result"]
    decoded = read_container(container_path)
    expected = effective_state_dict(working)
    for name, tensor in expected.items():
        got = decoded.state.get(name)
        if got is None or got.dtype != tensor.dtype or not torch.equal(got.view(-1), tensor.contiguous().view(-1)):
            raise FormatError(f"internal error: tensor {name!r} did not decode bit-exactly; please report it")
    arch = ctx.extras["arch"]  # stages that change the architecture (channels) record their edits here
    restored = copy.deepcopy(template)
    channels = (arch or {}).get("channels")
    if channels and len(channels["edits"]) > edits_before:  # rebuild what this run's stages changed
        replay_channel_edits(restored, {**channels, "edits": channels["edits"][edits_before:]})
    restored = restore_model(restored, decoded.state, decoded.meta, str(container_path))
    # The P+Q columns: the same tensors with the same index widths as the shipped file, fixed-width codes.
    widths = {t.name: t.index_width or 1 for t in packed.tensors}
    fixed = state_to_bytes(expected, coding="fixed", index_bits=lambda name: widths[name])
    weight_names = [f"{n}.weight" for n, _ in select_layers(working, None, "report")]
    table = layer_table(packed, fixed, weight_names)

    report = {
        "recipe": recipe.to_dict(),
        "seed": seed,
        "arch": arch,
        "environment": environment(),
        "baseline": baseline,
        "stages": stages,
        "container": {
            "path": str(container_path),
            "bytes": packed.nbytes,
            "header_bytes": packed.header_bytes,
            "dense_bytes": baseline["dense_bytes"],
            "ratio": baseline["dense_bytes"] / packed.nbytes,
            "decodes_bit_exact": True,
            "accuracy": ctx.accuracy(restored),
            "accuracy_source": "model rebuilt from the decoded container alone",
        },
        "stage_ratios": [
            {"stage": s["stage"], "bytes": s["size"]["bytes"], "ratio": s["size"]["ratio"]} for s in stages
        ],
        "layers": table,
        "entropy": entropy_summary(packed),
        "histograms": histograms.to_dict(),
        "provenance": {
            "sizes": "measured: bytes of serialised containers "
            "(fixed-width codes before encode, the written file after)",
            "dense_bytes": "computed: parameters x 4 bytes (32-bit floats)",
            "accuracy": "measured: top-1 on the held-out data given (val_loader or eval_fn)",
        },
    }
    atomic_write(out_dir / "report.json", json.dumps(report, indent=2).encode())
    atomic_write(out_dir / "layers.md", to_markdown(table).encode())
    return CompressResult(working, report, container_path, out_dir)
