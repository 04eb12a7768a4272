"""report.html: a self-contained page (plots as base64 PNG, no scripts, no external URLs) rendered
from a run's report.json and the measured costs of the model rebuilt from its container."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgeshrink.devices.estimate import fit
from edgeshrink.devices.schema import Device
from edgeshrink.errors import FormatError
from edgeshrink.measure.profile import ModelCosts
from edgeshrink.report import plots

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child{text-align:left}.note{color:#666;font-size:12px}img{max-width:100%}"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _num(value: float | int | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _header(report: dict) -> list[str]:
    c = report["container"]
    env = report.get("environment", {})
    acc = _num(c.get("accuracy"), ".2f", "%") if c.get("accuracy") is not None else "not measured"
    return [
        f"<h1>edgeshrink report: {html.escape(report['recipe']['name'])}</h1>",
        f'<p class="note">{html.escape(json.dumps(report.get("arch")))}; torch {env.get("torch")}, '
        f"{html.escape(str(env.get('cpu')))}, {env.get('date')}</p>",
        f"<p>Container {c['bytes']:,} bytes (measured) from {c['dense_bytes']:,} dense fp32 bytes: "
        f"<b>{c['ratio']:.1f}x</b>; accuracy of the model rebuilt from the container {acc}.</p>",
    ]


def _layer_section(report: dict) -> list[str]:
    rows = report["layers"]["rows"]
    if not rows:
        return []
    table = [
        [
            r["layer"],
            f"{r['weights']:,}",
            _num(r["kept_percent"], ".1f"),
            r.get("encoding", "-"),
            _num(r["weight_bits_huffman"], ".2f"),
            _num(r["index_bits_huffman"], ".2f"),
            f"{r['bytes_huffman']:,}",
            _num(r["ratio_huffman"], ".1f", "x"),
        ]
        for r in rows
    ]
    header = ["layer", "weights", "kept %", "encoding", "bits/weight", "bits/index", "bytes", "ratio"]
    return [
        "<h2>Per layer: kept weights and bits</h2>",
        _img(plots.layers(rows), "per-layer kept and bits"),
        _table(header, table),
    ]


def _size_section(report: dict) -> list[str]:
    c, base = report["container"], report["baseline"]
    points = [("baseline", base["dense_bytes"], base.get("accuracy"))]
    points += [(s["stage"], s["size"]["bytes"], s.get("accuracy")) for s in report["stages"]]
    points.append(("encode (the file)", c["bytes"], c.get("accuracy")))
    rows = [[n, f"{b:,}", _num(a, ".2f")] for n, b, a in points]
    return [
        "<h2>Accuracy against size</h2>",
        _img(plots.accuracy_vs_size(points), "accuracy against size"),
        _table(["stage", "bytes", "accuracy %"], rows),
    ]


def _device_section(report: dict, costs: ModelCosts, devices: list[Device]) -> list[str]:
    """Fit on each catalogue device of the file its runtime would load (devices/estimate.py), next to
    the dense fp32 baseline."""
    base = report["baseline"]["dense_bytes"]
    peak = costs.activations.peak_bytes
    fits = [(d, fit(costs, d)) for d in devices]
    rows = [{"name": d.name, "flash": d.flash_bytes, "ram": d.ram_bytes} for d in devices]
    sizes = {"dense fp32 weights": base}
    if fits:
        deployed = fits[0][1].deployment
        sizes["in flash"] = deployed.flash_bytes
        sizes["in RAM (weights + peak activations)"] = deployed.ram_weight_bytes + peak
    table = [
        [
            d.name,
            f"{d.flash_bytes:,}",
            f"{d.ram_bytes:,}",
            f.deployment.runtime,
            f"{f.flash.need:,}",
            f"{f.ram.need:,}",
            "yes" if base <= d.flash_bytes and base + peak <= d.ram_bytes else "no",
            "yes" if f.flash.ok and f.ram.ok else "no",
        ]
        for d, f in fits
    ]
    header = ["device", "flash B", "RAM B", "runtime", "flash need B", "RAM need B", "dense fits", "fits"]
    notes = {f.deployment.note for _, f in fits}
    note = (
        f"Peak activations {peak:,} B ({costs.activations.source}). {' '.join(sorted(notes))}. "
        "Dense fits: the fp32 baseline's weights in flash and in RAM with the same activations (estimated)."
    )
    return [
        "<h2>Device fit</h2>",
        _img(plots.device_fit(rows, sizes), "device fit"),
        _table(header, table),
        f'<p class="note">{html.escape(note)}</p>',
    ]


def render(report: dict, costs: ModelCosts, devices: list[Device]) -> str:
    """The HTML text of a report, with the device fit of the run's measured model."""
    parts = _header(report)
    if report.get("histograms"):
        parts += ["<h2>Weight distributions</h2>", _img(plots.histograms(report["histograms"]), "weight histograms")]
        parts.append('<p class="note">Nonzero weights per layer, measured after each stage.</p>')
    parts += _layer_section(report) + _size_section(report) + _device_section(report, costs, devices)
    title = html.escape(f"edgeshrink report: {report['recipe']['name']}")
    head = f'<meta charset="utf-8"><title>{title}</title><style>{_CSS}</style>'
    return f'<!DOCTYPE html><html lang="en"><head>{head}</head><body>{chr(10).join(parts)}</body></html>'


def read_report(run_dir: str | Path) -> dict:
    """RUN_DIR/report.json, or a one-line FormatError."""
    source = Path(run_dir) / "report.json"
    if not source.is_file():
        raise FormatError(f"{run_dir} has no report.json: pass a run folder written by `edgeshrink compress`")
    try:
        return json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source} is not valid JSON ({exc}); run `edgeshrink compress` again") from None


def write_report(run_dir: str | Path, costs: ModelCosts, devices: list[Device], out: str | Path | None = None) -> Path:
    """Render RUN_DIR/report.json to `out` (default RUN_DIR/report.html)."""
    from edgeshrink.files import atomic_write

    path = Path(out) if out else Path(run_dir) / "report.html"
    return atomic_write(path, render(read_report(run_dir), costs, devices).encode())
