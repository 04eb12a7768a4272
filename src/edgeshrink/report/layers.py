"""The per-layer table of Deep Compression (Tables 2 and 3 of the paper), from two real encodings.

P = pruning, Q = weight sharing (quantization), H = Huffman coding. "fixed" columns come from the
container written with fixed-width codes, "Huffman" columns from the container as shipped; both are
measured bytes of serialised containers, not formulas.
"""

from __future__ import annotations

from edgeshrink.encode.container import PackResult
from edgeshrink.encode.tensors import TensorStats

COLUMNS = [
    ("layer", "Layer"),
    ("weights", "Weights"),
    ("kept_percent", "Kept % (P)"),
    ("weight_bits_fixed", "W bits (P+Q)"),
    ("weight_bits_huffman", "W bits (+H)"),
    ("index_bits_fixed", "Idx bits (P+Q)"),
    ("index_bits_huffman", "Idx bits (+H)"),
    ("ratio_fixed", "Ratio (P+Q)"),
    ("ratio_huffman", "Ratio (+H)"),
]


def _per_nonzero(bits: int, nnz: int) -> float | None:
    return bits / nnz if nnz else None


def _row(fixed: TensorStats, huff: TensorStats) -> dict:
    sparse = huff.encoding.startswith("sparse")
    coded = huff.encoding != "raw"
    per_value = huff.nnz if sparse else huff.numel  # a dense codebook codes every element
    return {
        "layer": huff.name,
        "weights": huff.numel,
        "kept_percent": 100.0 * huff.nnz / huff.numel if huff.numel else 0.0,
        "encoding": huff.encoding,
        "codebook_size": huff.codebook_size,
        "weight_bits_fixed": fixed.value_width,
        "weight_bits_huffman": _per_nonzero(huff.value_bits, per_value) if coded else huff.value_width,
        "index_bits_fixed": fixed.index_width if sparse else None,
        "index_bits_huffman": _per_nonzero(huff.index_bits, huff.nnz) if sparse else None,
        "fillers": huff.fillers,
        "bytes_fixed": fixed.nbytes,
        "bytes_huffman": huff.nbytes,
        "ratio_fixed": huff.dense_bytes / fixed.nbytes if fixed.nbytes else None,
        "ratio_huffman": huff.dense_bytes / huff.nbytes if huff.nbytes else None,
    }


def layer_table(huffman: PackResult, fixed: PackResult, weight_tensors: list[str]) -> dict:
    """Rows for the weight tensors of compressible layers, a row for everything else, and totals."""
    fixed_by_name = {t.name: t for t in fixed.tensors}
    rows = [_row(fixed_by_name[t.name], t) for t in huffman.tensors if t.name in weight_tensors]
    others = [t for t in huffman.tensors if t.name not in weight_tensors]
    other_fixed = sum(fixed_by_name[t.name].nbytes for t in others)
    other_huff = sum(t.nbytes for t in others)
    framing_huff = huffman.nbytes - sum(t.nbytes for t in huffman.tensors)
    framing_fixed = fixed.nbytes - sum(t.nbytes for t in fixed.tensors)
    weights = sum(r["weights"] for r in rows)
    kept = sum(t.nnz for t in huffman.tensors if t.name in weight_tensors)
    return {
        "rows": rows,
        "other_tensors": {
            "tensors": [t.name for t in others],
            "weights": sum(t.numel for t in others),
            "bytes_fixed": other_fixed,
            "bytes_huffman": other_huff,
        },
        "framing_bytes": {"fixed": framing_fixed, "huffman": framing_huff},
        "total": {
            "layer": "Total",
            "weights": weights + sum(t.numel for t in others),
            "kept_percent": 100.0 * kept / weights if weights else 0.0,
            "bytes_fixed": fixed.nbytes,
            "bytes_huffman": huffman.nbytes,
            "ratio_fixed": fixed.dense_bytes / fixed.nbytes,
            "ratio_huffman": huffman.dense_bytes / huffman.nbytes,
        },
    }


def entropy_summary(huffman: PackResult) -> dict:
    """How close the Huffman-coded streams come to the Shannon entropy of their symbols."""
    streams = []
    for t in huffman.tensors:
        if t.encoding == "raw" or t.coding != "huffman":
            continue
        if t.encoding.startswith("sparse"):
            streams.append(
                {"tensor": t.name, "stream": "index", "bits": t.index_bits, "entropy_bits": t.index_entropy_bits}
            )
        if t.encoding in ("sparse-codebook", "codebook"):
            streams.append(
                {"tensor": t.name, "stream": "value", "bits": t.value_bits, "entropy_bits": t.value_entropy_bits}
            )
    for s in streams:
        s["overhead_percent"] = 100.0 * (s["bits"] / s["entropy_bits"] - 1) if s["entropy_bits"] else 0.0
    total_bits = sum(s["bits"] for s in streams)
    total_entropy = sum(s["entropy_bits"] for s in streams)
    return {
        "streams": streams,
        "total_bits": total_bits,
        "total_entropy_bits": total_entropy,
        "overhead_percent": 100.0 * (total_bits / total_entropy - 1) if total_entropy else 0.0,
        "note": "payload bits of the Huffman-coded streams against count x empirical entropy of their symbols "
        "(code tables and codebooks are counted in the file size, not here)",
    }


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.startswith("ratio"):
        return f"{value:.1f}x"
    if key.endswith("bits_huffman"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table_lines(table: dict) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows (layers, other tensors, totals) for printing or markdown."""
    header = [title for _, title in COLUMNS]
    body = [[_cell(key, row[key]) for key, _ in COLUMNS] for row in table["rows"]]
    other = table["other_tensors"]
    if other["tensors"]:
        body.append(
            [
                f"other ({len(other['tensors'])})",
                _cell("weights", other["weights"]),
                "",
                "",
                "",
                "",
                "",
                f"{other['bytes_fixed']:,} B",
                f"{other['bytes_huffman']:,} B",
            ]
        )
    total = table["total"]
    body.append(
        [
            "Total",
            _cell("weights", total["weights"]),
            _cell("kept_percent", total["kept_percent"]),
            "",
            "",
            "",
            "",
            _cell("ratio", total["ratio_fixed"]),
            _cell("ratio", total["ratio_huffman"]),
        ]
    )
    return header, body


def to_markdown(table: dict) -> str:
    header, body = table_lines(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def print_table(table: dict, title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    header, body = table_lines(table)
    rt = Table(title=title or None)
    for i, h in enumerate(header):
        rt.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in body:
        rt.add_row(*row)
    import sys

    Console(width=None if sys.stdout.isatty() else 120).print(rt)
