"""report.html: a self-contained page (plots as base64 PNG, no scripts, no external URLs) rendered
from a run's report.json."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from edgeshrink.errors import FormatError
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


def _peak_activations(run_dir: Path) -> int | None:
    """Peak activation bytes of the run's model when its architecture is known, else None."""
    from edgeshrink.errors import EdgeshrinkError
    from edgeshrink.measure.profile import profile

    try:
        return profile(run_dir, latency=False)["activations"]["peak_bytes"]
    except EdgeshrinkError:
        return None


def render(report: dict, peak_activations: int | None, devices_dir=None) -> str:
    """The HTML text of a report."""
    from edgeshrink.devices.catalogue import load_devices

    c, base = report["container"], report["baseline"]
    parts = [f"<h1>edgeshrink report: {html.escape(report['recipe']['name'])}</h1>"]
    env = report.get("environment", {})
    parts.append(
        f'<p class="note">{html.escape(json.dumps(report.get("arch")))}; torch {env.get("torch")}, '
        f"{html.escape(str(env.get('cpu')))}, {env.get('date')}</p>"
    )
    acc = f"{c['accuracy']:.2f}%" if c.get("accuracy") is not None else "not measured"
    parts.append(
        f"<p>Container {c['bytes']:,} bytes (measured) from {c['dense_bytes']:,} dense fp32 bytes: "
        f"<b>{c['ratio']:.1f}x</b>; accuracy from the container {acc}.</p>"
    )
    if report.get("histograms"):
        parts += ["<h2>Weight distributions</h2>", _img(plots.histograms(report["histograms"]), "weight histograms")]
        parts.append('<p class="note">Nonzero weights per layer, measured after each stage.</p>')
    rows = report["layers"]["rows"]
    if rows:
        parts += ["<h2>Per layer: kept weights and bits</h2>", _img(plots.layers(rows), "per-layer kept and bits")]
        parts.append(
            _table(
                ["layer", "weights", "kept %", "bits/weight", "bits/index", "bytes", "ratio"],
                [
                    [
                        r["layer"],
                        f"{r['weights']:,}",
                        f"{r['kept_percent']:.1f}",
                        f"{r['weight_bits_huffman']:.2f}",
                        f"{r['index_bits_huffman']:.2f}",
                        f"{r['bytes_huffman']:,}",
                        f"{r['ratio_huffman']:.1f}x",
                    ]
                    for r in rows
                ],
            )
        )
    points = [("baseline", base["dense_bytes"], base.get("accuracy"))]
    points += [
        (s["stage"], s["size"]["bytes"], c.get("accuracy") if s["stage"] == "encode" else s.get("accuracy"))
        for s in report["stages"]
    ]
    parts += ["<h2>Accuracy against size</h2>", _img(plots.accuracy_vs_size(points), "accuracy against size")]
    parts.append(
        _table(
            ["stage", "bytes", "accuracy %"], [[n, f"{b:,}", "-" if a is None else f"{a:.2f}"] for n, b, a in points]
        )
    )
    devices = load_devices(devices_dir)
    peak = peak_activations or 0
    fit_rows = []
    for d in devices.values():
        fit_rows.append({"name": d.name, "flash": d.flash_bytes, "ram": d.ram_bytes})
    sizes = {"dense fp32": base["dense_bytes"], "container": c["bytes"]}
    if peak_activations:
        sizes["container + peak activations"] = c["bytes"] + peak
    parts += ["<h2>Device fit</h2>", _img(plots.device_fit(fit_rows, sizes), "device fit")]
    table = []
    for d in devices.values():
        dense_ok = base["dense_bytes"] <= d.flash_bytes and base["dense_bytes"] + peak <= d.ram_bytes
        cont_ok = c["bytes"] <= d.flash_bytes and c["bytes"] + peak <= d.ram_bytes
        table.append(
            [d.name, f"{d.flash_bytes:,}", f"{d.ram_bytes:,}", "yes" if dense_ok else "no", "yes" if cont_ok else "no"]
        )
    parts.append(_table(["device", "flash B", "RAM B", "dense fits", "container fits"], table))
    note = f"peak activations {peak_activations:,} B (computed, batch 1)" if peak_activations else "activations unknown"
    parts.append(f'<p class="note">Fits: weights in flash, weights + {note} in RAM.</p>')
    body = "\n".join(parts)
    title = html.escape(f"edgeshrink report: {report['recipe']['name']}")
    head = f'<meta charset="utf-8"><title>{title}</title><style>{_CSS}</style>'
    return f'<!DOCTYPE html><html lang="en"><head>{head}</head><body>{body}</body></html>'


def write_report(
    run_dir: str | Path, out: str | Path | None = None, devices_dir: str | Path | Sequence | None = None
) -> Path:
    """Render RUN_DIR/report.json to `out` (default RUN_DIR/report.html)."""
    from edgeshrink.encode.container import atomic_write

    run_dir = Path(run_dir)
    source = run_dir / "report.json"
    if not source.is_file():
        raise FormatError(f"{run_dir} has no report.json: pass a run folder written by `edgeshrink compress`")
    try:
        report = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{source} is not valid JSON ({exc}); run `edgeshrink compress` again") from None
    path = Path(out) if out else run_dir / "report.html"
    atomic_write(path, render(report, _peak_activations(run_dir), devices_dir).encode())
    return path
