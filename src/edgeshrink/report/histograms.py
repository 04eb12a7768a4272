"""Per-layer weight histograms across stages (the Deep Compression figure: before pruning, after
pruning, after sharing). Bins are fixed per layer at the first snapshot so stages compare directly."""

from __future__ import annotations

import numpy as np
from torch import nn

from edgeshrink.weights import prunable_weights


class WeightHistograms:
    """Record `add(label, model)` after each stage; `to_dict()` goes into report.json."""

    def __init__(self, model: nn.Module, bins: int = 80) -> None:
        self.edges: dict[str, np.ndarray] = {}
        for name, module in prunable_weights(model):
            w = module.weight.detach().float().numpy().ravel()
            lo, hi = float(w.min()), float(w.max())
            pad = 0.05 * (hi - lo or 1.0)
            self.edges[name] = np.linspace(lo - pad, hi + pad, bins + 1)
        self.stages: list[dict] = []

    def add(self, label: str, model: nn.Module) -> None:
        layers = {}
        for name, module in prunable_weights(model):
            if name not in self.edges:
                continue
            w = module.weight.detach().float().numpy().ravel()
            nz = w[w != 0]
            edges = self.edges[name]
            counts, _ = np.histogram(np.clip(nz, edges[0], edges[-1]), bins=edges)
            layers[name] = {
                "counts": counts.tolist(),
                "zeros": int(w.size - nz.size),
                "distinct": int(np.unique(nz).size),
            }
        self.stages.append({"stage": label, "layers": layers})

    def to_dict(self) -> dict:
        return {
            "edges": {k: v.tolist() for k, v in self.edges.items()},
            "stages": self.stages,
            "what": "histograms of the nonzero weights of each layer (zeros counted apart), measured",
        }
