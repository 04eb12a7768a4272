"""What a compress run measures as it goes: the baseline, and after each stage its record, parameter
counts, the container bytes with fixed-width codes (Deep Compression's P and P+Q sizes) and the weight
histograms."""

from __future__ import annotations

from edgeshrink.artifact import Artifact
from edgeshrink.io import EncodeConfig, to_bytes
from edgeshrink.measure.counts import parameter_counts
from edgeshrink.report.histograms import WeightHistograms
from edgeshrink.train import Progress

FIXED_WHAT = "container serialised with fixed-width codes (measured bytes)"


class RunLog:
    """Records the baseline at construction and each stage with `after_stage`."""

    def __init__(
        self, artifact: Artifact, encode: EncodeConfig, accuracy: float | None, progress: Progress, folded: list[str]
    ) -> None:
        """`folded`: the notes of the input model's reparametrizations folded into plain tensors (weight_norm)."""
        self.fixed = encode.model_copy(update={"coding": "fixed"})
        self.progress = progress
        model = artifact.model
        self.baseline = {
            "accuracy": accuracy,
            **parameter_counts(model),
            "dense_bytes": to_bytes(artifact, self.fixed, probe=False).dense_bytes,
        }
        if folded:
            self.baseline["reparametrizations_folded"] = folded
            progress.line(f"folded {len(folded)} training reparametrization(s): {folded[0]}")
        self.histograms = WeightHistograms(model)
        self.histograms.add("baseline", model)
        self.stages: list[dict] = []
        self.budget: dict | None = None  # the recipe's budget, judged after the last stage (pipeline/budget.py)

    def after_stage(self, artifact: Artifact) -> None:
        record = artifact.records[-1].model_dump()
        record.update(parameter_counts(artifact.model))
        nbytes = to_bytes(artifact, self.fixed, probe=False).nbytes
        ratio = self.baseline["dense_bytes"] / nbytes
        record["size"] = {"bytes": nbytes, "coding": "fixed", "what": FIXED_WHAT, "ratio": ratio}
        self.histograms.add(record["stage"], artifact.model)
        self.stages.append(record)
        acc = f", accuracy {record['accuracy']:.2f}%" if record["accuracy"] is not None else ""
        self.progress.line(f"stage {record['stage']}: {nbytes:,} bytes ({ratio:.1f}x){acc}")
