"""The compress command's summary on the terminal: the per-layer table (or the quantization plan), and
the accuracy, size and Huffman lines."""

from __future__ import annotations

from pathlib import Path

import typer


def _quantization_rows(report: dict) -> list[dict]:
    return [row for stage in report["stages"] if stage["stage"] == "quantize" for row in stage["layers"]]


def print_summary(report: dict) -> None:
    from edgeshrink.report.layers import print_table

    c = report["container"]
    rows = _quantization_rows(report)
    for row in rows:
        what = f"int{row['weight_bits']} weights ({row['granularity']})" if row["status"] == "quantized" else "float"
        why = f"  [{row['reason']}]" if row.get("reason") else ""
        drop = f"  sensitivity {row['sensitivity_drop']:+.2f} pts" if "sensitivity_drop" in row else ""
        typer.echo(f"  {row['name']:<24} {row['type']:<10} {what}{drop}{why}")
    if not rows:
        print_table(report["layers"], title=f"{report['recipe']['name']}: per-layer compression")
    base = report["baseline"]["accuracy"]
    ratios = ", ".join(f"{r['stage']} {r['ratio']:.1f}x" for r in report["stage_ratios"])
    ent = report["entropy"]
    typer.echo(
        f"accuracy: baseline {base:.2f}% -> from container {c['accuracy']:.2f}%"
        if base is not None and c["accuracy"] is not None
        else "accuracy: not measured (no validation data)"
    )
    typer.echo(
        f"size: {c['dense_bytes']:,} B dense fp32 -> {c['bytes']:,} B container ({c['ratio']:.1f}x); "
        f"per stage: {ratios}"
    )
    if ent["total_entropy_bits"]:
        typer.echo(
            f"Huffman streams: {ent['total_bits']:,} bits vs entropy {ent['total_entropy_bits']:,.0f} bits "
            f"(+{ent['overhead_percent']:.2f}%); fixed-width codes: {c['fixed_width_bytes']:,} B"
        )
    for stage in report["stages"]:
        for note in stage.get("notes", []):
            typer.echo(f"{stage['stage']}: {note}")
    if report.get("budget"):
        typer.echo(report["budget"]["note"])
    folder = Path(c["path"]).parent
    typer.echo(f"wrote {c['path']}, {folder / 'report.json'}, {folder / 'layers.md'}")
