"""What a search writes: search.json (every candidate, the front, the reference, the system) and report.html (the
front as a table, accuracy against deployable bytes and against latency with the front joined and the built-in
recipe's result marked), a self-contained page like `bench`'s."""

from __future__ import annotations

import html
import json
from pathlib import Path

from edgeshrink.autosearch.candidate import Candidate
from edgeshrink.files import atomic_write
from edgeshrink.report.html import _CSS, _img, _table
from edgeshrink.report.plots import _figure, _png

HEADER = ["trial", "what", "val accuracy", "test accuracy", "file", "bytes", "RAM", "latency (est.)", "MACs"]


def _what(c: Candidate) -> str:
    if c.recipe is not None:
        return ", ".join(s["type"] for s in c.recipe["stages"]) or "no stage"
    if c.arch is not None:
        kwargs = c.arch.get("model_kwargs", {})
        return f"{c.arch.get('model')} " + " ".join(f"{k}={v}" for k, v in kwargs.items() if k != "num_classes")
    return c.kind


def row(c: Candidate, label: str | None = None) -> list[str]:
    d = c.deployable
    test = "-" if c.test_accuracy is None else f"{c.test_accuracy:.2f}%"
    return [
        label or str(c.number), _what(c), f"{c.val_accuracy:.2f}%", test, d["format"], f"{d['bytes']:,}",
        f"{d['ram_bytes']:,}", f"{d['latency_ms']:.3f} ms", f"{c.macs:,}",
    ]  # fmt: skip


def tradeoff_plot(all_: list[Candidate], front: list[Candidate], reference: Candidate | None, x: str) -> str:
    """Validation accuracy against deployable bytes (`x="bytes"`) or estimated latency; front joined, infeasible
    candidates grey, the reference a star."""
    plt, fig = _figure(6.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    value = (lambda c: c.deployable["bytes"]) if x == "bytes" else (lambda c: c.deployable["latency_ms"])
    for c in all_:
        ax.scatter(value(c), c.val_accuracy, marker="x", color="C0" if c.feasible else "0.7", s=18)
    if front:
        ax.plot([value(c) for c in front], [c.val_accuracy for c in front], "o-", color="C1", label="Pareto front")
    if reference is not None:
        ax.scatter(value(reference), reference.val_accuracy, marker="*", s=160, color="C3", label="built-in recipe")
    ax.set_xscale("log")
    ax.set_xlabel("deployable file, bytes (measured)" if x == "bytes" else "latency on the device, ms (estimated)")
    ax.set_ylabel("validation accuracy, %")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def render(result) -> str:
    """report.html of a SearchResult."""
    s = result.summary
    rows = [row(c) for c in result.front]
    if result.reference is not None:
        rows.append(row(result.reference, f"{s.get('reference_name')} (built-in)"))
    notes = [
        f"{s['candidates']} candidates measured ({s['feasible']} fit the device), {s['pruned']} stopped early or "
        f"refused; study {s['study']!r} on {s['storage']}.",
        "Measured: accuracy (the PyTorch model each exported file was verified against, on the validation split "
        "held out from training; test accuracy reported only), file bytes, the TFLite Micro arena. Estimated: other "
        "RAM needs and the latency on the device (the device model, devices/estimate.py).",
        *s.get("comparison", []),
    ]
    parts = [
        f"<html><head><meta charset='utf-8'><title>edgeshrink search</title><style>{_CSS}</style></head><body>",
        f"<h1>edgeshrink search: {html.escape(s['what'])} for {html.escape(s['device'])}</h1>",
        f"<p>{html.escape(s.get('cpu', ''))}</p>",
        "<h2>Pareto front</h2>",
        _table(HEADER, rows),
        _img(tradeoff_plot(result.candidates, result.front, result.reference, "bytes"), "accuracy against bytes"),
        _img(tradeoff_plot(result.candidates, result.front, result.reference, "latency"), "accuracy against latency"),
        *(f"<p class='note'>{html.escape(n)}</p>" for n in notes),
        "<h2>Every candidate</h2>",
        _table(HEADER, [row(c) for c in result.candidates]),
    ]
    return "\n".join(parts + ["</body></html>"])


def write_outputs(result, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = atomic_write(out / "search.json", json.dumps(result.to_dict(), indent=2, default=str).encode())
    page = atomic_write(out / "report.html", render(result).encode())
    return data, page
