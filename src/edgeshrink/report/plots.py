"""Matplotlib figures of a run's report.json, returned as base64 PNG (embedded in report.html)."""

from __future__ import annotations

import base64
import io

import numpy as np


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.figure(figsize=(width, height), dpi=100)


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def histograms(hist: dict) -> str:
    """One panel per layer, one step curve per stage (nonzero weights)."""
    layers = list(hist["edges"])
    plt, fig = _figure(5 * min(len(layers), 3), 3.2 * ((len(layers) + 2) // 3))
    for i, layer in enumerate(layers):
        ax = fig.add_subplot((len(layers) + 2) // 3, min(len(layers), 3), i + 1)
        edges = np.asarray(hist["edges"][layer])
        for stage in hist["stages"]:
            data = stage["layers"].get(layer)
            if data is None:
                continue
            ax.stairs(data["counts"], edges, label=f"{stage['stage']} ({data['distinct']:,} distinct)")
        ax.set_title(layer)
        ax.set_xlabel("weight value (nonzero)")
        ax.set_ylabel("count")
        ax.legend(fontsize=7)
    return _png(plt, fig)


def layers(rows: list[dict]) -> str:
    """Kept weights (%) and bits per weight / index after Huffman coding, per layer."""
    names = [r["layer"] for r in rows]
    x = np.arange(len(names))
    plt, fig = _figure(10, 3.5)
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(x, [r["kept_percent"] or 0 for r in rows])
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylabel("weights kept (%)")
    ax = fig.add_subplot(1, 2, 2)
    ax.bar(x - 0.2, [r["weight_bits_huffman"] or 0 for r in rows], 0.4, label="bits per weight")
    ax.bar(x + 0.2, [r["index_bits_huffman"] or 0 for r in rows], 0.4, label="bits per index")
    ax.set_xticks(x, names, rotation=30, fontsize=8)
    ax.set_ylabel("bits (Huffman coded)")
    ax.legend(fontsize=8)
    return _png(plt, fig)


def accuracy_vs_size(points: list[tuple[str, int, float | None]]) -> str:
    """Accuracy against bytes, one point per stage."""
    plt, fig = _figure(6, 3.5)
    ax = fig.add_subplot(1, 1, 1)
    shown = [(n, b, a) for n, b, a in points if a is not None]
    ax.plot([b for _, b, _ in shown], [a for _, _, a in shown], "o-")
    for name, b, a in shown:
        ax.annotate(name, (b, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes (measured)")
    ax.set_ylabel("accuracy (%)")
    return _png(plt, fig)


def device_fit(rows: list[dict], sizes: dict[str, int]) -> str:
    """Each device's flash (bars) against the model's sizes (lines)."""
    plt, fig = _figure(8, 0.45 * len(rows) + 1.5)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["flash"] for r in rows], 0.4, label="flash", color="#9ecae1")
    ax.barh(y + 0.2, [r["ram"] for r in rows], 0.4, label="RAM", color="#fdae6b")
    for (label, size), style in zip(sizes.items(), ["--", "-", ":"], strict=False):
        ax.axvline(size, linestyle=style, color="k", label=f"{label}: {size:,} B")
    ax.set_yticks(y, [r["name"] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes")
    ax.legend(fontsize=7, loc="lower right")
    return _png(plt, fig)
