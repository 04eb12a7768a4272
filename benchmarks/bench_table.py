"""The markdown table of an `edgeshrink bench` run, from its bench.json (what docs/benchmarks.md shows).

python benchmarks/bench_table.py runs/bench-lenet5/bench/bench.json
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _name(artifact: str, task: str) -> str:
    """A zoo checkpoint's model name (TASK-MODEL-seed0[-eN].pt -> MODEL), other artifacts' file names."""
    name = Path(artifact).name
    if name.startswith(f"{task}-"):
        name = re.sub(r"-seed\d+(-e\d+)?\.pt$", "", name.removeprefix(f"{task}-"))
    return name


def markdown(bench: dict) -> str:
    lines = [
        "| model | runtime | precision | bytes | accuracy | batch-1 latency, median (min-max) | peak memory | energy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in bench["rows"]:
        lat = r["latency"]
        peak = f"{r['peak_bytes']:,} B ({'measured' if r['peak_source'].startswith('measured') else 'estimated'})"
        energy = "-" if r["energy_uj"] is None else f"{r['energy_uj']:,.0f} µJ (estimated)"
        lines.append(
            f"| {_name(r['artifact'], bench['task'])}{' *' if r['pareto'] else ''} | {r['runtime']} | "
            f"{r['precision']} | "
            f"{r['bytes']:,} B | {r['accuracy']:.2f}% | {lat['median_ms']:.3f} ms ({lat['min_ms']:.3f}-"
            f"{lat['max_ms']:.3f}) | {peak} | {energy} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
