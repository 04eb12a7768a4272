"""report.json of a compress run: what every stage did and cost, the file as written, per-layer
figures (Deep Compression's tables), entropy of the coded streams, histograms, provenance."""

from __future__ import annotations

from edgeshrink.artifact import Artifact
from edgeshrink.encode.container import PackResult
from edgeshrink.environment import environment
from edgeshrink.recipes import Recipe
from edgeshrink.report.layers import entropy_summary, layer_table

PROVENANCE = {
    "sizes": "measured: bytes of serialised containers (fixed-width codes after each stage, the file at encode)",
    "dense_bytes": "computed: parameters x 4 bytes (32-bit floats)",
    "accuracy": "measured: top-1 on the held-out data given (val_loader or eval_fn)",
}


def run_report(
    recipe: Recipe,
    artifact: Artifact,
    log,  # pipeline.log.RunLog
    packed: PackResult,
    fixed: PackResult,
    weight_names: list[str],
    accuracy: float | None,
) -> dict:
    """The report dict (also written as report.json)."""
    dense = log.baseline["dense_bytes"]
    encode_row = {"stage": "encode", "bytes": packed.nbytes, "ratio": dense / packed.nbytes}
    return {
        "recipe": recipe.to_dict(),
        "seed": artifact.meta.get("seed"),
        "arch": artifact.arch.to_dict(),
        "quantization": None if artifact.quantization is None else artifact.quantization.model_dump(mode="json"),
        "precision": artifact.precision,
        "environment": environment(),
        "baseline": log.baseline,
        "stages": log.stages,
        "budget": log.budget,
        "container": {
            "path": str(packed.path),
            "bytes": packed.nbytes,
            "header_bytes": packed.header_bytes,
            "dense_bytes": dense,
            "ratio": dense / packed.nbytes,
            "coding": recipe.encode.coding,
            "fixed_width_bytes": fixed.nbytes,
            "decodes_bit_exact": True,
            "accuracy": accuracy,
            "accuracy_source": "model rebuilt from the file alone (edgeshrink.load)",
        },
        "stage_ratios": [
            {"stage": s["stage"], "bytes": s["size"]["bytes"], "ratio": s["size"]["ratio"]} for s in log.stages
        ]
        + [encode_row],
        "layers": layer_table(packed, fixed, weight_names),
        "entropy": entropy_summary(packed),
        "histograms": log.histograms.to_dict(),
        "provenance": PROVENANCE,
    }
