"""What `bench` writes: bench.json (every figure, the system, the protocol) and report.html (the table, the
accuracy-vs-latency and accuracy-vs-bytes plots with the Pareto front highlighted, what was measured and what
was estimated), a self-contained page: plots as base64 PNG, no scripts, no external resources."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgeshrink.files import atomic_write
from edgeshrink.report.html import _CSS, _img, _table
from edgeshrink.report.plots import _figure, _png

HEADER = ["artifact", "runtime", "precision", "bytes", "accuracy", "latency median (min-max)", "peak memory", "MACs"]


def _label(row) -> str:
    return f"{Path(row.artifact).name} / {row.runtime}"


def table_rows(result) -> list[list[str]]:
    """The table, as text cells (terminal and HTML alike)."""
    rows = []
    for r in result.rows:
        peak = f"{r.peak_bytes:,} B ({'measured' if r.peak_source.startswith('measured') else 'estimated'})"
        lat = r.latency
        rows.append(
            [
                Path(r.artifact).name + (" *" if r.pareto else ""),
                r.runtime,
                r.precision,
                f"{r.bytes:,} B",
                "-" if r.accuracy is None else f"{r.accuracy:.2f}%",
                f"{lat.median_ms:.3f} ms ({lat.min_ms:.3f}-{lat.max_ms:.3f})",
                "-" if r.peak_bytes is None else peak,
                f"{r.macs:,}",
            ]
        )
    return rows


def tradeoff_plot(result, x: str) -> str:
    """Accuracy against latency (`x="latency"`) or file bytes (`x="bytes"`), the front joined and marked."""
    plt, fig = _figure(6.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    value = (lambda r: r.latency.median_ms) if x == "latency" else (lambda r: r.bytes)
    for r in result.rows:
        ax.scatter(value(r), r.accuracy or 0.0, marker="o" if r.pareto else "x", color="C1" if r.pareto else "C0")
        ax.annotate(_label(r), (value(r), r.accuracy or 0.0), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = sorted((r for r in result.rows if r.pareto), key=value)
    if front:
        ax.plot([value(r) for r in front], [r.accuracy or 0.0 for r in front], "-", color="C1", label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels collide on short ranges
    ax.set_xlabel("batch-1 latency, ms (measured, median of windows)" if x == "latency" else "file bytes (measured)")
    ax.set_ylabel("test accuracy, % (from the runtime)")
    return _png(plt, fig)


def render(result) -> str:
    s = result.system
    notes = [
        *result.notes,
        "Measured here: accuracy (from each runtime, on the task's test split), file bytes, latency; peak memory "
        "where the runtime reports it (TFLite Micro's arena). Estimated: the other peak memories (computed tensor "
        "liveness), energy (the device model). * marks the accuracy-vs-latency Pareto front.",
    ]
    parts = [
        f"<html><head><meta charset='utf-8'><title>edgeshrink bench</title><style>{_CSS}</style></head><body>",
        f"<h1>edgeshrink bench: {html.escape(str(result.task))}</h1>",
        f"<p>{html.escape(str(s.get('cpu')))}, {s.get('threads')} threads, "
        f"flags {html.escape(', '.join(s.get('cpu_flags', [])))}; "
        f"runtimes {html.escape(json.dumps(s.get('runtimes', {})))}</p>",
        _table(HEADER, table_rows(result)),
        _img(tradeoff_plot(result, "latency"), "accuracy against latency"),
        _img(tradeoff_plot(result, "bytes"), "accuracy against bytes"),
        *(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
    ]
    if result.skipped:
        rows = [[k["artifact"], k["runtime"], k["reason"]] for k in result.skipped]
        parts += ["<h2>Not run</h2>", _table(["artifact", "runtime", "why"], rows)]
    return "\n".join(parts + ["</body></html>"])


def write_outputs(result, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = atomic_write(out / "bench.json", json.dumps(result.to_dict(), indent=2, default=str).encode())
    page = atomic_write(out / "report.html", render(result).encode())
    return data, page
