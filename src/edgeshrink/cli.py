"""The `edgeshrink` command: parses options and calls the Python API; errors are one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.errors import ConfigError, EdgeshrinkError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Compress trained PyTorch models for edge devices, measure and verify the result.",
)

TaskOpt = Annotated[str, typer.Option("--task", "-t", help="built-in task (see `edgeshrink tasks`)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", "-d", help="folder with the task's data files")]
SeedOpt = Annotated[int, typer.Option("--seed", help="random seed (training order, initialisation, k-means)")]
RecipeOpt = Annotated[str, typer.Option("--recipe", "-r", help="built-in recipe name or a .toml file")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]


def _train_baseline(task_name: str, data_dir: Path | None, seed: int, epochs: int | None, quiet: bool):
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import Progress, evaluate, fit, seed_everything

    task = load_task(task_name)
    data = task.data(data_dir)
    seed_everything(seed)
    model = task.build_model()
    cfg = task.train if epochs is None else task.train.model_copy(update={"epochs": epochs})
    fit(
        model,
        task.train_loader(data, seed),
        cfg,
        data.test.loader(1000),
        stage="baseline",
        progress=Progress(not quiet),
    )
    return task, data, model, evaluate(model, data.test.loader(1000))


@app.command()
def train(
    task: TaskOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="checkpoint to write")],
    data_dir: DataDirOpt = None,
    epochs: Annotated[int | None, typer.Option(help="override the task's epochs")] = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a task's baseline model and save it as a checkpoint."""
    from edgeshrink.checkpoints import save_checkpoint

    t, _, model, acc = _train_baseline(task, data_dir, seed, epochs, quiet)
    save_checkpoint(out, model, t.arch, acc)
    typer.echo(f"{t.name}: test accuracy {acc:.2f}% -> {out}")


@app.command()
def compress(
    task: TaskOpt,
    recipe: RecipeOpt = "deep-compression",
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write")] = Path("runs/latest"),
    data_dir: DataDirOpt = None,
    weights: Annotated[Path | None, typer.Option(help="trained checkpoint; trains a baseline when absent")] = None,
    baseline_epochs: Annotated[int | None, typer.Option(help="epochs when training the baseline here")] = None,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Compress a task's model with a recipe; writes the container, report.json and the layer table."""
    from edgeshrink.checkpoints import load_checkpoint, save_checkpoint
    from edgeshrink.encode.container import load_into
    from edgeshrink.pipeline import compress as run_compress
    from edgeshrink.recipes import load_recipe
    from edgeshrink.report.layers import print_table
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import evaluate

    load_recipe(recipe)  # fail on a bad recipe before any training
    t = load_task(task)
    arch = t.arch
    if weights is None:
        t, data, model, acc = _train_baseline(task, data_dir, seed, baseline_epochs, quiet)
        save_checkpoint(out / "baseline.pt", model, t.arch, acc)
    else:
        data = t.data(data_dir)
        ckpt = load_checkpoint(weights)
        _check_arch(ckpt["arch"], t.name, str(weights))
        model = load_into(_rebuild(t, ckpt["arch"], ckpt["state_dict"]), ckpt["state_dict"], str(weights))
        arch = ckpt["arch"] or t.arch  # a student or channel-pruned checkpoint keeps its own architecture
        acc = evaluate(model, data.test.loader(1000))
    result = run_compress(
        model,
        recipe,
        train_loader=t.train_loader(data, seed),
        val_loader=data.test.loader(1000),
        out=out,
        seed=seed,
        arch=arch,
        progress=not quiet,
        baseline_accuracy=acc,
    )
    _summary(result.report, print_table)


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option("--teacher", help="trained checkpoint of the task's model (the teacher)")],
    task: TaskOpt,
    student: Annotated[str, typer.Option("--student", help="zoo model to train (see `edgeshrink zoo`)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="student checkpoint to write")],
    student_width: Annotated[float | None, typer.Option(help="width multiplier of the student")] = None,
    data_dir: DataDirOpt = None,
    epochs: Annotated[
        int | None, typer.Option(help="override the task's epochs (distillation gains need several times more)")
    ] = None,
    temperature: Annotated[float, typer.Option(help="softmax temperature of the soft targets")] = 4.0,
    alpha: Annotated[float, typer.Option(help="weight of the soft-target loss (1 - alpha on the labels)")] = 0.5,
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Train a smaller zoo model from a teacher checkpoint with the distillation loss (Hinton et al.)."""
    from edgeshrink.checkpoints import load_checkpoint, save_checkpoint
    from edgeshrink.distillation import distill_student
    from edgeshrink.encode.container import load_into
    from edgeshrink.models import create_model
    from edgeshrink.tasks.registry import load_task
    from edgeshrink.train import DistillConfig, Progress, evaluate, seed_everything

    t = load_task(task)
    cfg = t.train.model_copy(update={"distill": DistillConfig(temperature=temperature, alpha=alpha)})
    if epochs is not None:
        cfg = cfg.model_copy(update={"epochs": epochs})
    data = t.data(data_dir)
    ckpt = load_checkpoint(teacher)
    _check_arch(ckpt["arch"], t.name, str(teacher))
    teacher_model = load_into(_rebuild(t, ckpt["arch"], ckpt["state_dict"]), ckpt["state_dict"], str(teacher))
    kwargs: dict = {"num_classes": data.num_classes}
    if student_width is not None:
        kwargs["width"] = student_width
    seed_everything(seed)
    student_model = create_model(student, input_shape=t.input_shape, **kwargs)
    test = data.test.loader(1000)
    distill_student(teacher_model, student_model, t.train_loader(data, seed), cfg, test, Progress(not quiet))
    acc, teacher_acc = evaluate(student_model, test), evaluate(teacher_model, test)
    arch = {"task": t.name, "model": student, "model_kwargs": kwargs, "input_shape": list(t.input_shape)}
    save_checkpoint(out, student_model, arch, acc)
    params = [sum(p.numel() for p in m.parameters()) for m in (teacher_model, student_model)]
    typer.echo(
        f"{t.name}: student {student} ({params[1]:,} parameters) test accuracy {acc:.2f}%, "
        f"teacher ({params[0]:,} parameters) {teacher_acc:.2f}% -> {out}"
    )


def _rebuild(task, arch: dict | None, state):
    """The architecture a file records: its zoo model (or the task's), with its channel edits replayed."""
    from edgeshrink.architecture import build_from_arch

    return build_from_arch(arch, None if (arch or {}).get("model") else task.build_model(), state)


def _check_arch(arch: dict | None, task: str, source: str) -> None:
    if arch and arch.get("task") and arch["task"] != task:
        from edgeshrink.tasks.registry import load_task

        if load_task(arch["task"]).model != load_task(task).model:
            raise ConfigError(f"{source} was made for task {arch['task']!r}, not {task!r}: pass --task {arch['task']}")


def _summary(report: dict, print_table) -> None:
    c = report["container"]
    quant_rows = [row for stage in report["stages"] if stage["stage"] == "quantize" for row in stage["layers"]]
    if quant_rows:
        for row in quant_rows:
            what = (
                f"int{row['weight_bits']} weights ({row['granularity']})" if row["status"] == "quantized" else "float"
            )
            why = f"  [{row['reason']}]" if row.get("reason") else ""
            drop = f"  sensitivity {row['sensitivity_drop']:+.2f} pts" if "sensitivity_drop" in row else ""
            typer.echo(f"  {row['name']:<24} {row['type']:<10} {what}{drop}{why}")
    else:
        print_table(report["layers"], title=f"{report['recipe']['name']}: per-layer compression")
    base = report["baseline"]["accuracy"]
    ratios = ", ".join(f"{r['stage']} {r['ratio']:.1f}x" for r in report["stage_ratios"])
    ent = report["entropy"]
    typer.echo(
        f"accuracy: baseline {base:.2f}% -> from container {c['accuracy']:.2f}%"
        if base is not None
        else "accuracy: not measured (no validation data)"
    )
    typer.echo(
        f"size: {c['dense_bytes']:,} B dense fp32 -> {c['bytes']:,} B container ({c['ratio']:.1f}x); "
        f"per stage: {ratios}"
    )
    typer.echo(
        f"Huffman streams: {ent['total_bits']:,} bits vs entropy {ent['total_entropy_bits']:,.0f} bits "
        f"(+{ent['overhead_percent']:.2f}%)"
    )
    typer.echo(f"wrote {c['path']}, {Path(c['path']).parent / 'report.json'}, {Path(c['path']).parent / 'layers.md'}")


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="an .eshrink container or a checkpoint")],
    task: Annotated[str | None, typer.Option("--task", "-t", help="task (default: the one the file records)")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Accuracy of a container or checkpoint on its task's held-out split, from the file alone."""
    from edgeshrink.train import evaluate as run_eval

    t, model = _model_from_artifact(artifact, task)
    acc = run_eval(model, t.data(data_dir).test.loader(1000))
    typer.echo(f"{artifact}: {t.name} test accuracy {acc:.2f}% (error {100 - acc:.2f}%)")


def _read_artifact(path: Path):
    """(state, arch, meta) of a container, a checkpoint, or a run folder's container."""
    from edgeshrink.checkpoints import load_checkpoint
    from edgeshrink.encode.container import MAGIC, read_container
    from edgeshrink.pipeline import CONTAINER_NAME

    if path.is_dir():
        if not (path / CONTAINER_NAME).is_file():
            raise ConfigError(f"{path} is a folder without {CONTAINER_NAME}: pass a run folder written by compress")
        path = path / CONTAINER_NAME
    if not path.is_file():
        raise ConfigError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    if head == MAGIC:
        c = read_container(path)
        return c.state, c.arch, c.meta
    ckpt = load_checkpoint(path)
    return ckpt["state_dict"], ckpt["arch"], {}


def _model_from_artifact(artifact: Path, task: str | None):
    """The task and the model a container, checkpoint or run folder holds (quantization included)."""
    from edgeshrink.restore import restore_model
    from edgeshrink.tasks.registry import load_task

    state, arch, meta = _read_artifact(artifact)
    name = task or (arch or {}).get("task")
    if not name:
        raise ConfigError(f"{artifact} does not record its task: pass --task")
    _check_arch(arch, name, str(artifact))
    t = load_task(name)
    return t, restore_model(_rebuild(t, arch, state), state, meta, str(artifact))


EXPORT_FORMATS = ("onnx", "tflite", "c")


@app.command()
def export(
    artifact: Annotated[Path, typer.Argument(help="a run folder, an .eshrink container or a checkpoint")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="onnx, tflite, or c (a .tflite as C++ arrays for TFLite Micro)")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="file to write; a folder for --format c (default: next to the input)"),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="task (default: the one the file records)")] = None,
    data_dir: DataDirOpt = None,
    verify: Annotated[bool, typer.Option(help="run the file on the task's test split and compare with PyTorch")] = True,
    activation_type: Annotated[
        str, typer.Option(help="onnx, quantized models: uint8 (U8S8), int8 (S8S8) or auto (time both, keep the faster)")
    ] = "auto",
    quantize: Annotated[
        str,
        typer.Option(
            help="tflite / c: none (fp32), dynamic (int8 weights), int8 (full integer, calibrated on the task's "
            "data unless the model is already quantized) or auto (int8 for quantized models, else none)"
        ),
    ] = "auto",
    name: Annotated[str, typer.Option(help="c: symbol and file prefix (NAME_data.h, NAME_data.cc)")] = "model",
    verify_examples: Annotated[int, typer.Option(help="test examples used for verification (0: all)")] = 0,
    calibration_examples: Annotated[int, typer.Option(help="tflite int8 of a float model: training examples")] = 512,
) -> None:
    """Export a compressed model to a file a device runs, and verify it against the PyTorch model."""
    import json

    import torch

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; supported: {', '.join(EXPORT_FORMATS)}")
    if activation_type not in ("auto", "uint8", "int8"):
        raise ConfigError(f"--activation-type must be auto, uint8 or int8, got {activation_type!r}")
    if format == "c":
        from edgeshrink.exporters.c_array import check_name

        check_name(name)
    if format in ("tflite", "c"):
        from edgeshrink.exporters.litert_runtime import require_litert

        require_litert(f"--format {format}")
    t, model = _model_from_artifact(artifact, task)
    where = artifact if artifact.is_dir() else artifact.parent
    if format == "c":
        folder = out or where
        out = folder / f"{name}.tflite"
    elif out is None:
        out = where / ("model.onnx" if format == "onnx" else "model.tflite")
    example = torch.zeros(1, *t.input_shape)
    batches = None
    if verify:
        inputs = t.data(data_dir).test.inputs
        if verify_examples > 0:
            inputs = inputs[:verify_examples]
        batches = list(inputs.split(500))
    if format == "onnx":
        from edgeshrink.exporters.onnx import export as run_export

        result = run_export(model, out, example, verify_data=batches, verify=verify, activation_type=activation_type)
    else:
        from edgeshrink.exporters.tflite import export_tflite
        from edgeshrink.quant.prepare import is_quantized

        calibration = None
        if quantize == "int8" and not is_quantized(model):
            calibration = list(t.data(data_dir).train.inputs[:calibration_examples].split(64))
        result = export_tflite(
            model, out, example, quantize=quantize, verify_data=batches, calibration=calibration, verify=verify
        )
    summary = result.to_dict()
    if format == "c":
        from edgeshrink.exporters.c_array import write_c_array
        from edgeshrink.measure.memory import peak_activation_memory
        from edgeshrink.measure.tflite_graph import from_tflite

        arena = peak_activation_memory(from_tflite(out))["peak_bytes"]
        comments = [f"source: {artifact} ({result.precision}, {result.bytes:,} bytes)"]
        if result.io:
            for side in ("input", "output"):
                d = result.io[side]
                q = f", scale {d['scale']:.9g}, zero point {d['zero_point']}" if "scale" in d else ""
                comments.append(f"{side}: {d['dtype']} {d['shape']}{q}")
            if "scale" in result.io["input"]:
                comments.append(
                    "feed q = clamp(round(x / scale) + zero_point, -128, 127); read (q - zero_point) * scale"
                )
        comments.append(
            f"tensor arena estimate: {arena:,} bytes = peak live activations (edgeshrink profile, batch 1); "
            "TFLite Micro adds its own bookkeeping: allocate a margin and check arena_used_bytes()"
        )
        h, cc = write_c_array(out.read_bytes(), out.parent, name, comments)
        summary["c_files"] = [str(h), str(cc)]
        summary["arena_estimate_bytes"] = arena
    (out.parent / (out.stem + ".export.json")).write_text(json.dumps(summary, indent=2))
    typer.echo(f"wrote {out}: {result.bytes:,} bytes, {result.precision}")
    if format == "c":
        typer.echo(f"wrote {summary['c_files'][0]} and {summary['c_files'][1]} (arena estimate {arena:,} bytes)")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.io and "scale" in result.io["input"]:
        i, o = result.io["input"], result.io["output"]
        typer.echo(
            f"int8 input: scale {i['scale']:.6g}, zero point {i['zero_point']}; "
            f"int8 output: scale {o['scale']:.6g}, zero point {o['zero_point']}"
        )
    if result.kernel_choice:
        times = ", ".join(f"{k} {v:.3f} ms" for k, v in result.kernel_choice["measured_batch1_ms"].items())
        float_ms = result.kernel_choice["float_batch1_ms"]
        typer.echo(
            f"kernels: {result.kernel_choice['chosen']} (batch 1 on this machine: {times}; float {float_ms:.3f} ms)"
        )
        if "recommendation" in result.kernel_choice:
            typer.echo(f"note: {result.kernel_choice['recommendation']}")
    if result.parity:
        p = result.parity
        steps = f" ({p['max_diff_steps']:.2f} output steps)" if "max_diff_steps" in p else ""
        runtime = "ONNX Runtime" if format == "onnx" else "LiteRT"
        typer.echo(
            f"verified on {p['examples']:,} test examples in {runtime}: max |logit diff| {p['max_abs_diff']:.3g}"
            f"{steps}, top-1 agreement {p['top1_agreement']:.2f}%"
        )


@app.command()
def inspect(container: Annotated[Path, typer.Argument(help="an .eshrink container")]) -> None:
    """List the tensors of a container: encoding, nonzeros, distinct values."""
    import torch

    from edgeshrink.encode.container import read_container

    c = read_container(container)
    typer.echo(f"{container}: {c.nbytes:,} bytes, arch {c.arch}, meta {c.meta}")
    for name, t in c.state.items():
        nnz = int(torch.count_nonzero(t))
        distinct = int(torch.unique(t[t != 0]).numel()) if t.is_floating_point() else "-"
        shape = str(list(t.shape))
        typer.echo(f"  {name:30s} {shape:18s} {t.dtype} nonzeros {nnz:,}/{t.numel():,} distinct {distinct}")


@app.command()
def tasks() -> None:
    """List the built-in tasks."""
    from edgeshrink.tasks.registry import list_tasks, load_task

    for name in list_tasks():
        t = load_task(name)
        typer.echo(f"{name:16s} {t.description}")


@app.command()
def zoo(
    names: Annotated[list[str] | None, typer.Argument(help="models to list (default: all)")] = None,
) -> None:
    """List the zoo's architectures: input shapes, parameters and MACs (one forward pass, batch 1)."""
    from edgeshrink.measure.macs import flop_counter_macs as count_macs
    from edgeshrink.models import create_model, list_models, model_entry

    typer.echo(f"{'model':14s} {'input':10s} {'parameters':>11s} {'MACs':>13s}  description")
    for name in names or list_models():
        entry = model_entry(name)
        for shape in entry.shapes():
            model = create_model(name, input_shape=shape)
            params = sum(p.numel() for p in model.parameters())
            dims = "x".join(map(str, shape))
            typer.echo(f"{name:14s} {dims:10s} {params:11,d} {count_macs(model, shape):13,d}  {entry.description}")
    typer.echo("options: width= on families with a width multiplier; MACs counted by torch's FlopCounterMode / 2")


@app.command()
def recipes() -> None:
    """List the built-in recipes."""
    from edgeshrink.recipes import list_recipes

    for name, description in list_recipes().items():
        typer.echo(f"{name:20s} {description}")


from edgeshrink.cli_measure import register as _register_measure  # noqa: E402

_register_measure(app)


def main() -> None:
    try:
        app()
    except EdgeshrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
