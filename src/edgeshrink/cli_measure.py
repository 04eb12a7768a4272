"""Commands that measure and advise: profile, devices, advise, report. `register(app)` adds them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ArtifactArg = Annotated[Path, typer.Argument(help="a checkpoint (.pt), a run folder, an .eshrink container or .onnx")]
DevicesDirOpt = Annotated[
    Path | None, typer.Option("--devices-dir", help="folder with your own device files (also $EDGESHRINK_DEVICES)")
]
ModelOpt = Annotated[str | None, typer.Option("--model", help="zoo model, for files that do not record it")]

devices_app = typer.Typer(help="The device catalogue: list it, or calibrate this machine.", invoke_without_command=True)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n:,} B ({n / 1e6:.2f} MB)" if n >= 1e5 else f"{n:,} B"


def _print_profile(p: dict) -> None:
    a, w, m, act = p["artifact"], p["weights"], p["macs"], p["activations"]
    typer.echo(f"{a['path']} ({a['kind']}, {p['dtype']}, input {p['input_shape']})")
    typer.echo(f"  parameters {w['parameters']:,}, nonzeros {w['nonzeros']:,}")
    typer.echo(f"  MACs (batch 1, computed): dense {m['dense']:,}, nonzero weights only {m['nonzero']:,}")
    typer.echo(
        f"  weight bytes: dense fp32 {_bytes(w['dense_fp32'])} (computed), int8 {_bytes(w['int8'])} (computed), "
        f"container {_bytes(w['container'])} (measured), file {_bytes(w['file'])} (measured)"
    )
    typer.echo(
        f"  peak activations (batch 1, computed): {_bytes(act['peak_bytes'])} at {act['at']} "
        f"(sum of all activations {_bytes(act['sum_bytes'])})"
    )
    for t in p.get("latency", {}).values():
        typer.echo(
            f"  latency (measured on this machine): {t['runtime']} {t['version']}: median {t['median_ms']:.3f} ms, "
            f"p90 {t['p90_ms']:.3f} ms ({t['runs']} runs, {t['threads']} thread(s), batch {t['batch']})"
        )
    d = p.get("device")
    if d:
        f, lat, en = d["fit"], d["latency"], d["energy"]
        ok = {True: "fits", False: "does NOT fit"}
        typer.echo(f"  on {d['device']} (estimated):")
        typer.echo(
            f"    flash: needs {_bytes(f['flash']['need'])} of {_bytes(f['flash']['have'])}: {ok[f['flash']['ok']]}"
        )
        typer.echo(
            f"    RAM (weights + peak activations): needs {_bytes(f['ram']['need'])} of {_bytes(f['ram']['have'])}: "
            f"{ok[f['ram']['ok']]}"
        )
        if not (f["flash"]["ok"] and f["ram"]["ok"]):
            typer.echo(f"    must shrink {f['shrink_factor']:.1f}x to fit")
        typer.echo(f"    latency {lat['ms']:.3f} ms ({lat['macs']} MACs, {lat['ops']} ops)")
        t = en["op_table"]
        typer.echo(
            f"    energy per inference (op table, Horowitz 45 nm, a lower bound): {t['uj']:.2f} µJ "
            f"(range {t['uj_range'][0]:.2f}-{t['uj_range'][1]:.2f}; weights from {t['weights_from']})"
        )
        if "board" in en:
            typer.echo(f"    energy per inference (board power x latency): {en['board']['uj']:.1f} µJ")


def profile(
    artifact: ArtifactArg,
    device: Annotated[
        str | None, typer.Option("--device", help="device for estimates (see `edgeshrink devices`)")
    ] = None,
    model: ModelOpt = None,
    threads: Annotated[int, typer.Option(help="threads for the latency measurements")] = 1,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="skip the latency measurements")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the profile as JSON")] = False,
    devices_dir: DevicesDirOpt = None,
) -> None:
    """Parameters, MACs, weight bytes, peak activations, measured latency; estimates for a device."""
    from edgeshrink.measure.profile import profile as run_profile

    p = run_profile(
        artifact, device=device, model_name=model, latency=not no_latency, threads=threads, devices_dir=devices_dir
    )
    if as_json:
        typer.echo(json.dumps(p, indent=2))
    else:
        _print_profile(p)


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


def advise(
    artifact: ArtifactArg,
    device: Annotated[str, typer.Option("--device", help="target device (see `edgeshrink devices`)")],
    network: Annotated[str, typer.Option("--network", help="wifi | lte | ble | lora | offline")],
    latency_budget: Annotated[float | None, typer.Option("--latency-budget", help="milliseconds")] = None,
    private: Annotated[bool, typer.Option("--private", help="the input may not leave the device")] = False,
    model: ModelOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the advice as JSON")] = False,
    devices_dir: DevicesDirOpt = None,
) -> None:
    """Run on the device, in the cloud, or cannot run as it is: the answer and its reasons in order."""
    from edgeshrink.devices.advise import advise as run_advise

    a = run_advise(
        artifact,
        device,
        network,
        latency_budget_ms=latency_budget,
        private=private,
        model_name=model,
        devices_dir=devices_dir,
    )
    if as_json:
        typer.echo(json.dumps(a.to_dict(), indent=2))
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
    """Write a self-contained report.html (plots embedded) from the run's report.json."""
    from edgeshrink.report.html import write_report

    path = write_report(run_dir, out, devices_dir=devices_dir)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command()(profile)
    app.command()(advise)
    app.command()(report)
    app.add_typer(devices_app, name="devices")
