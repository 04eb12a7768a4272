"""Commands on a compressed model's files: evaluate, inspect, export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.cli.common import DataDirOpt, FileTaskOpt, ModelOpt, open_artifact

ArtifactArg = Annotated[Path, typer.Argument(help="a run folder, an .eshrink container or a checkpoint")]


def evaluate(
    artifact: ArtifactArg, task: FileTaskOpt = None, data_dir: DataDirOpt = None, model: ModelOpt = None
) -> None:
    """Accuracy of a run folder, container or checkpoint on its task's held-out split, from the file alone."""
    from edgeshrink.train import evaluate as run_eval

    t, art = open_artifact(artifact, task, model, need_task=True)
    acc = run_eval(art.model, t.data(data_dir).test.loader(1000))
    typer.echo(f"{artifact}: {t.name} test accuracy {acc:.2f}% (error {100 - acc:.2f}%)")


def inspect(container: Annotated[Path, typer.Argument(help="a run folder or an .eshrink container")]) -> None:
    """List the tensors of a container: how each is stored, nonzeros, distinct values; and its metadata."""
    import torch

    from edgeshrink.encode.container import read_container
    from edgeshrink.io import CONTAINER_NAME

    c = read_container(container / CONTAINER_NAME if container.is_dir() else container)
    typer.echo(f"{container}: {c.nbytes:,} bytes, container version {c.version}")
    typer.echo(f"  arch: {json.dumps(c.arch)}")
    for key in ("recipe", "seed", "precision", "quantization", "input"):
        if key in c.meta:
            typer.echo(f"  {key}: {json.dumps(c.meta[key])}")
    for entry in c.entries:
        t = c.state[entry.n]
        nnz = int(torch.count_nonzero(t))
        distinct = int(torch.unique(t).numel()) if t.numel() else 0
        shape = str(list(t.shape))
        typer.echo(
            f"  {entry.n:34s} {shape:18s} {str(t.dtype).removeprefix('torch.'):8s} {entry.e:9s} "
            f"nonzeros {nnz:,}/{t.numel():,} distinct {distinct:,}"
        )


def _verify_batches(task, data_dir: Path | None, examples: int):
    inputs = task.data(data_dir).test.inputs
    if examples > 0:
        inputs = inputs[:examples]
    return list(inputs.split(500))


def _print_result(result, fmt: str) -> None:
    typer.echo(f"wrote {result.path}: {result.bytes:,} bytes, {result.precision}")
    if len(result.files) > 1:
        typer.echo(f"wrote {', '.join(result.files[1:])}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    if result.io and "scale" in result.io["input"]:
        i, o = result.io["input"], result.io["output"]
        typer.echo(
            f"int8 input: scale {i['scale']:.6g}, zero point {i['zero_point']}; "
            f"int8 output: scale {o['scale']:.6g}, zero point {o['zero_point']}"
        )
    if fmt in ("tflm", "c"):
        _print_tensors(result)
    if result.kernel_choice:
        k = result.kernel_choice
        times = "; ".join(
            f"{batch}: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in ms_by.items())
            for batch, ms_by in k["measured_ms"].items()
        )
        typer.echo(f"kernels: {k['chosen']} (on this machine, {times})")
        if "recommendation" in k:
            typer.echo(f"note: {k['recommendation']}")
    if result.parity:
        _print_parity(result)


def _print_parity(result) -> None:
    p = result.parity
    if "structural" in p:
        kinds = ", ".join(f"{r['layer']}: {r['stored_as']}" for r in p["structural"]["layers"])
        typer.echo(f"checked structurally: every weight decodes from the package to the model's ({kinds})")
        return
    steps = f" ({p['max_diff_steps']:.2f} output steps)" if "max_diff_steps" in p else ""
    agreement = f", top-1 agreement {p['top1_agreement']:.2f}%" if p["top1_agreement"] is not None else ""
    where = f"verified on {p['examples']:,} examples in {result.runtime}"
    typer.echo(f"{where}: max |diff| {p['max_abs_diff']:.3g}{steps}{agreement}")


def _print_tensors(result) -> None:
    """Per weight tensor: the TFLM decode method chosen and its bytes; then file, arena and decode memory."""
    for t in result.layers:
        others = ", ".join(f"{m} {b:,}" for m, b in t["candidates"].items())
        typer.echo(
            f"  {t['layer'][-24:]:24s} {str(t['shape']):16s} {t['method']:18s} {t['plain_bytes']:>9,} B -> "
            f"{t['bytes']:>9,} B  (candidates: {others})"
        )
    e = result.extra
    typer.echo(
        f"file {result.bytes:,} B ({e['uncompressed_int8_bytes']:,} B before DECODE compression); tensor arena "
        f"{e['arena_bytes']:,} B measured in TFLite Micro, of which decoded weights up to {e['decode_bytes_max']:,} B"
    )


def _default_target(artifact: Path, format: str, suffix: str) -> Path:
    """Next to the input: a run folder's model.SUFFIX (model.tflm.tflite for TFLite Micro, the folder for c)."""
    from edgeshrink.api.deployed import TFLM_FILE

    where = artifact if artifact.is_dir() else artifact.parent
    default = {"c": None, "tflm": TFLM_FILE, "ncnn": "model.ncnn.param"}.get(format, f"model{suffix}")
    return where / default if default else where


ActivationTypeOpt = Annotated[
    str | None, typer.Option(help="onnx, quantized models: uint8 (U8S8), int8 (S8S8) or auto (time both)")
]
RecurrentWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="onnx, quantized models: GRU/LSTM weights as float (default, fastest) or int8 rows (a smaller "
        "file, dequantized on every run)"
    ),
]
QuantizeOpt = Annotated[
    str | None,
    typer.Option(
        help="tflite: none, float16, dynamic, int8 (a float model is calibrated on the task's data) or auto; "
        "pte: none, int8 or auto"
    ),
]
NameOpt = Annotated[str | None, typer.Option(help="c: symbol and file prefix (NAME_data.h, NAME_data.cc)")]
PrecisionOpt = Annotated[
    str | None, typer.Option(help="ncnn: fp16 (auto) or fp32 weights; coreml: fp32 or fp16 (auto: the model's)")
]
CompressOpt = Annotated[
    str | None,
    typer.Option(help="tflm / c: weight compression: auto (smallest per tensor), lut, prune, huffman, none"),
]


def export(
    artifact: ArtifactArg,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="export format: onnx, tflite, c, ... (`edgeshrink formats` lists them)"),
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="file to write; a folder for --format c (default: next to the input)"),
    ] = None,
    task: FileTaskOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    verify: Annotated[bool, typer.Option(help="run the file on the task's test split and compare with PyTorch")] = True,
    activation_type: ActivationTypeOpt = None,
    recurrent_weights: RecurrentWeightsOpt = None,
    quantize: QuantizeOpt = None,
    name: NameOpt = None,
    precision: PrecisionOpt = None,
    compress: CompressOpt = None,
    verify_examples: Annotated[int, typer.Option(help="test examples used for verification (0: all)")] = 0,
    calibration_examples: Annotated[int, typer.Option(help="int8 of a float model: training examples")] = 512,
) -> None:
    """Export a compressed model to a file a device runs, verified in that runtime (nothing is written
    when the check fails)."""
    from edgeshrink.api.export import export as run_export
    from edgeshrink.exporters.base import get_exporter

    exporter = get_exporter(format)
    exporter.require()
    given = {"activation_type": activation_type, "recurrent_weights": recurrent_weights, "quantize": quantize}
    given |= {"name": name, "compress": compress, "precision": precision}
    options = {k: v for k, v in given.items() if v is not None}
    exporter.resolve(options)  # a wrong option fails before the model is loaded
    t, art = open_artifact(artifact, task, model)
    target = out or _default_target(artifact, format, exporter.suffix)
    batches = _verify_batches(t, data_dir, verify_examples) if (verify and t is not None) else None
    integer = options.get("quantize") == "int8" or format in ("tflm", "c")  # a float model is calibrated first
    calibration = None
    if t is not None and integer and not art.is_quantized:
        calibration = list(t.data(data_dir).train.inputs[:calibration_examples].split(64))
    result = run_export(
        art, target, None, format=format, verify_data=batches, calibration=calibration, verify=verify, **options
    )
    _print_result(result, format)
    if verify and t is None:
        typer.echo("note: verified on the example input only: pass --task to verify on a test split")


def register(app: typer.Typer) -> None:
    for command in (evaluate, inspect, export):
        app.command()(command)
