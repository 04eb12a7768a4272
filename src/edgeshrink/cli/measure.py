"""Commands that measure and advise: profile, devices [calibrate], advise, report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from edgeshrink.cli.common import DevicesDirOpt, FileTaskOpt, ModelOpt, open_artifact

ArtifactArg = Annotated[
    Path, typer.Argument(help="a run folder, an .eshrink container, a checkpoint (.pt), or an .onnx / .tflite file")
]
devices_app = typer.Typer(help="The device catalogue: list it, or calibrate this machine.", invoke_without_command=True)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n:,} B ({n / 1e6:.2f} MB)" if n >= 1e5 else f"{n:,} B"


def _target(path: Path, task: str | None, model: str | None):
    """The artifact a command measures (exported files are measured as they are)."""
    from edgeshrink.api.inputs import is_exported_file, naming_exported_files

    if is_exported_file(path):
        return path
    with naming_exported_files():
        return open_artifact(path, task, model)[1]


def _print_device(d) -> None:
    f, lat, en = d.fit, d.latency, d.energy
    ok = {True: "fits", False: "does NOT fit"}
    dep = f.deployment
    typer.echo(f"  on {d.device} (estimated): {dep.file} in {dep.runtime}")
    typer.echo(f"    flash: needs {_bytes(f.flash.need)} of {_bytes(f.flash.have)}: {ok[f.flash.ok]}")
    typer.echo(
        f"    RAM (weights + peak activations): needs {_bytes(f.ram.need)} of {_bytes(f.ram.have)}: {ok[f.ram.ok]}"
    )
    typer.echo(f"    ({dep.note})")
    if not (f.flash.ok and f.ram.ok) and math.isfinite(f.shrink_factor):
        typer.echo(f"    must shrink {f.shrink_factor:.1f}x to fit")
    elif not f.activations_alone_fit:
        typer.echo("    the peak of the arena alone exceeds RAM: shrinking the weights in flash cannot help")
    typer.echo(f"    latency {lat.ms:.3f} ms ({lat.ops} ops, dense MACs)")
    t = en.op_table
    typer.echo(
        f"    energy per inference (op table, Horowitz 45 nm, a lower bound): {t.uj:.2f} µJ "
        f"(range {t.uj_range[0]:.2f}-{t.uj_range[1]:.2f}; weights from {t.weights_from})"
    )
    if en.board is not None:
        typer.echo(f"    energy per inference (board power x latency): {en.board.uj:.1f} µJ")


def _print_profile(p) -> None:
    s, w, m, act = p.source, p.weights, p.macs, p.activations
    typer.echo(f"{s.path} ({s.kind}, {s.precision}, input {p.input_shape})")
    typer.echo(f"  parameters {w.parameters:,}, nonzeros {w.nonzeros:,}")
    typer.echo(f"  MACs (batch 1, computed): dense {m.dense:,}, nonzero weights only {m.nonzero:,}")
    typer.echo(
        f"  weight bytes: dense fp32 {_bytes(w.dense_fp32)}, as computed ({p.dtype}) {_bytes(w.stored)} (computed); "
        f"container {_bytes(w.container)}, file {_bytes(w.file)} (measured)"
    )
    typer.echo(
        f"  peak activations (batch 1, {act.source.split(':')[0]}): {_bytes(act.peak_bytes)} at {act.at} "
        f"(sum of all activations {_bytes(act.sum_bytes)})"
    )
    for t in p.latency.values():
        typer.echo(
            f"  latency (measured on this machine): {t.runtime} {t.version}: median {t.median_ms:.3f} ms, "
            f"p90 {t.p90_ms:.3f} ms ({t.runs} runs, {t.threads} thread(s), batch {t.batch})"
        )
    for note in p.notes:
        typer.echo(f"  note: {note}")
    if p.device is not None:
        _print_device(p.device)


def profile(
    artifact: ArtifactArg,
    device: Annotated[
        str | None, typer.Option("--device", help="device for estimates (see `edgeshrink devices`)")
    ] = None,
    task: FileTaskOpt = None,
    model: ModelOpt = None,
    threads: Annotated[int, typer.Option(help="threads for the latency measurements")] = 1,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="skip the latency measurements")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the profile as JSON")] = False,
    devices_dir: DevicesDirOpt = None,
) -> None:
    """Parameters, MACs, weight bytes, peak activations, measured latency; estimates for a device."""
    from edgeshrink.api.profile import profile as run_profile
    from edgeshrink.devices.catalogue import get_device

    if device is not None:
        get_device(device, devices_dir)  # an unknown device fails before the model is loaded
    p = run_profile(
        _target(artifact, task, model), device=device, latency=not no_latency, threads=threads, devices_dir=devices_dir
    )
    if as_json:
        typer.echo(json.dumps(p.to_dict(), indent=2, default=str))
    else:
        _print_profile(p)


def advise(
    artifact: ArtifactArg,
    device: Annotated[str, typer.Option("--device", help="target device (see `edgeshrink devices`)")],
    network: Annotated[str, typer.Option("--network", help="wifi | lte | ble | lora | offline")],
    latency_budget: Annotated[float | None, typer.Option("--latency-budget", help="milliseconds")] = None,
    private: Annotated[bool, typer.Option("--private", help="the input may not leave the device")] = False,
    task: FileTaskOpt = None,
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the advice as JSON")] = False,
    devices_dir: DevicesDirOpt = None,
) -> None:
    """Run on the device, in the cloud, or cannot run as it is: the answer and its reasons in order."""
    from edgeshrink.api.advise import advise as run_advise
    from edgeshrink.devices.catalogue import get_device, get_network

    get_device(device, devices_dir), get_network(network, devices_dir)  # fail before loading the model
    a = run_advise(
        _target(artifact, task, model),
        device=device,
        network=network,
        latency_budget_ms=latency_budget,
        private=private,
        devices_dir=devices_dir,
    )
    if as_json:
        typer.echo(json.dumps(a.to_dict(), indent=2, default=str))
        return
    answer = {
        "on-device": f"run on {a.device}",
        "cloud": "run in the cloud",
        "cannot-run": f"cannot run on {a.device} as it is",
    }
    typer.echo(f"{artifact}: {answer[a.verdict]}")
    for i, r in enumerate(a.reasons, 1):
        typer.echo(f"  {i}. {r}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="a run folder written by `edgeshrink compress`")],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file (default RUN_DIR/report.html)")] = None,
    devices_dir: DevicesDirOpt = None,
) -> None:
    """Write a self-contained report.html (plots embedded) from the run's report.json and its model."""
    from edgeshrink.api.report import report as write

    typer.echo(f"wrote {write(run_dir, out, devices_dir)}")


@devices_app.callback()
def devices(ctx: typer.Context, devices_dir: DevicesDirOpt = None) -> None:
    """List the device catalogue and the network profiles."""
    if ctx.invoked_subcommand is not None:
        return
    from edgeshrink.devices.catalogue import THIS_MACHINE, load_devices, load_networks, user_devices_dir

    devs = load_devices(devices_dir)
    typer.echo(f"{'device':22s} {'flash':>10s} {'RAM':>10s} {'fp32 MAC/s':>11s} {'int8 MAC/s':>11s}  description")
    for d in devs.values():
        typer.echo(
            f"{d.name:22s} {d.flash_bytes / 1e6:9.2f}M {d.ram_bytes / 1e6:9.2f}M {d.fp32_macs_per_s:11.3g} "
            f"{d.int8_macs_per_s:11.3g}  {d.description}{' (measured)' if d.measured else ''}"
        )
    if THIS_MACHINE not in devs:
        typer.echo(f"{THIS_MACHINE:22s} not calibrated: run `edgeshrink devices calibrate`")
    typer.echo(f"\nuser device files: {user_devices_dir()} (or --devices-dir / $EDGESHRINK_DEVICES)")
    typer.echo(f"\n{'network':10s} {'uplink':>12s} {'RTT':>8s} {'nJ/byte':>9s}  description")
    for n in load_networks(devices_dir).values():
        up = f"{n.uplink_bytes_per_s / 1e3:,.1f} kB/s" if n.available else "-"
        typer.echo(f"{n.name:10s} {up:>12s} {n.rtt_s * 1e3:6.0f}ms {n.tx_nj_per_byte:9,.0f}  {n.description}")


@devices_app.command()
def calibrate(
    threads: Annotated[int, typer.Option(help="threads to measure with")] = 1,
    out: Annotated[Path | None, typer.Option("--out", help="folder to write this-machine.toml to")] = None,
) -> None:
    """Measure this machine (ONNX Runtime on the CPU) and write it as the device 'this-machine'."""
    from edgeshrink.devices.calibrate import calibrate as run
    from edgeshrink.devices.calibrate import write_device

    device = run(threads)
    path = write_device(device, out)
    typer.echo(
        f"this-machine: fp32 {device.fp32_macs_per_s:.3g} MAC/s, int8 {device.int8_macs_per_s:.3g} MAC/s, "
        f"{device.memory_bandwidth_bytes_per_s:.3g} B/s, {device.op_overhead_s * 1e6:.2f} µs per op "
        f"(measured, {threads} thread(s)) -> {path}"
    )


def register(app: typer.Typer) -> None:
    for command in (profile, advise, report):
        app.command()(command)
    app.add_typer(devices_app, name="devices")
