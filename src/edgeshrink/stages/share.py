"""Weight sharing (Deep Compression, stage 2): per-layer 1-D k-means, then centroid fine-tuning.

The nonzero weights of a layer are clustered into at most 2^bits values (pruned weights stay zero and
are not clustered). Centroid initialisation: "linear" (evenly spaced between min and max: the paper's
choice, it keeps the rare large weights), "density" (quantiles of the weights) or "random" (sampled
weights). The layer then computes with `centroids[assignment]`; fine-tuning trains the centroids with
the gradients of their weights summed (see `weights.SharedWeights`).
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from edgeshrink.artifact import Artifact, StageRecord
from edgeshrink.scope import Scope, per_layer, select_layers
from edgeshrink.stages.base import SpaceContext, StageConfig, StageContext, Suggest, register_stage, suggest_finetune
from edgeshrink.stages.share_grid import share_quantized, weight_quantizer
from edgeshrink.train import TrainConfig
from edgeshrink.weights import attach_codebook, get_mask

Init = Literal["linear", "density", "random"]
MAX_BUDGET_BITS = 8  # the budget raises a layer's bits up to here


class ShareConfig(StageConfig):
    type: Literal["share"] = "share"
    bits: int = Field(5, ge=1, le=15, description="codebook of at most 2^bits shared values per layer")
    per_layer: dict[str, int] = Field(default_factory=dict, description="selector -> bits")
    init: Init = "linear"
    bias_bits: int | None = Field(
        None,
        ge=1,
        le=15,
        description="also share each selected layer's bias among at most 2^bias_bits values (None: biases stay "
        "float); small nets' float biases are a visible share of a container compressed 100x",
    )
    scope: Scope = Scope()
    finetune: TrainConfig = TrainConfig(epochs=2, lr=1e-4)
    max_accuracy_drop: float | None = Field(
        None, ge=0, description="points of validation accuracy the stage may lose: raise the bits until it holds"
    )

    @field_validator("per_layer")
    @classmethod
    def _bits_range(cls, value: dict[str, int]) -> dict[str, int]:
        for key, bits in value.items():
            if not 1 <= bits <= 15:
                raise ValueError(f"bits for {key!r} must be in 1..15, got {bits}")
        return value

    @classmethod
    def search_space(cls, trial: Suggest, ctx: SpaceContext, prefix: str) -> ShareConfig:
        """Codebook bits 2-8 per layer (or per kind: conv, linear), the centroid initialisation, and 0 or
        more epochs of centroid fine-tuning."""
        if ctx.per_layer:
            bits = {layer.name: trial.suggest_int(f"{prefix}.bits.{layer.name}", 2, 8) for layer in ctx.layers}
        else:
            kinds = sorted({layer.kind for layer in ctx.layers})
            bits = {kind: trial.suggest_int(f"{prefix}.bits.{kind}", 2, 8) for kind in kinds}
        return cls(
            per_layer=bits,
            init=trial.suggest_categorical(f"{prefix}.init", ["linear", "density"]),
            finetune=suggest_finetune(trial, f"{prefix}.finetune", ctx, (1e-5, 1e-3), min_epochs=0),
        )


def initial_centroids(values: np.ndarray, k: int, init: Init, seed: int = 0) -> np.ndarray:
    if init == "linear":
        return np.linspace(values.min(), values.max(), k)
    if init == "density":
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    rng = np.random.default_rng(seed)
    return rng.choice(np.unique(values), size=k, replace=False)


def kmeans_1d(values: np.ndarray, k: int, init: Init = "linear", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D values into at most k centroids; returns (centroids ascending, label per value)."""
    values = np.asarray(values, dtype=np.float64)
    distinct = np.unique(values)
    if len(distinct) <= k:
        return distinct, np.searchsorted(distinct, values)
    from sklearn.cluster import KMeans

    start = np.unique(initial_centroids(values, k, init, seed))  # duplicates (density on ties) are dropped
    km = KMeans(
        n_clusters=len(start), init=start.reshape(-1, 1), n_init=1, max_iter=300, tol=1e-6, random_state=seed
    ).fit(values.reshape(-1, 1))
    centroids = km.cluster_centers_.reshape(-1)
    order = np.argsort(centroids)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return centroids[order], rank[km.labels_]


def _cluster(model: nn.Module, layers, bits: dict[str, int], cfg: ShareConfig, seed: int) -> tuple[list, list]:
    """Attach a codebook of at most 2^bits values to each layer; returns (rows, layers put on a grid)."""
    rows, on_grid = [], []
    was_training = model.training
    model.eval()  # a quantized layer's weights as its codes x scale
    with torch.no_grad():
        for name, module in layers:
            weight = module.weight.detach()
            mask = get_mask(module, "weight")
            keep = mask if mask is not None else torch.ones_like(weight, dtype=torch.bool)
            values = weight[keep].double().numpy()
            assignment = torch.full(weight.shape, -1, dtype=torch.int64)
            if values.size == 0:
                centroids = np.zeros(0)
            else:
                centroids, labels = kmeans_1d(values, 2 ** bits[name], cfg.init, seed)
                assignment[keep] = torch.from_numpy(labels.astype(np.int64))
            if weight_quantizer(module) is not None:  # after quantize: the codebook on the layer's grid
                share_quantized(module, torch.from_numpy(centroids).float(), assignment)
                on_grid.append(name)
            else:
                attach_codebook(module, "weight", torch.from_numpy(centroids).float(), assignment)
                if cfg.bias_bits is not None and isinstance(module.bias, torch.Tensor):
                    _share_bias(module, cfg.bias_bits, cfg.init, seed)
            shared = module.weight.detach()[keep].double().numpy()
            rows.append(
                {
                    "layer": name,
                    "bits": bits[name],
                    "clusters": len(centroids),
                    "nonzeros": int(values.size),
                    "mean_abs_error": float(np.abs(shared - values).mean()) if values.size else 0.0,
                }
            )
    model.train(was_training)
    return rows, on_grid


def _share_bias(module: nn.Module, bits: int, init: Init, seed: int) -> None:
    """The layer's bias as at most 2^bits shared values, fine-tuned like the weights' centroids. Quantized
    layers are never here: their exports compute biases in int32 from the weight and input scales."""
    values = module.bias.detach().double().numpy()
    centroids, labels = kmeans_1d(values, 2**bits, init, seed)
    assignment = torch.from_numpy(labels.astype(np.int64)).reshape(module.bias.shape)
    attach_codebook(module, "bias", torch.from_numpy(centroids).float(), assignment)


def _within_budget(cfg: ShareConfig, reference: float | None, accuracy: float | None) -> bool:
    return reference is None or accuracy is None or reference - accuracy <= cfg.max_accuracy_drop


@register_stage(ShareConfig)
def share(artifact: Artifact, cfg: ShareConfig, ctx: StageContext) -> Artifact:
    layers = select_layers(artifact.model, cfg.scope, "share")
    bits = per_layer(artifact.model, layers, cfg.per_layer, cfg.bits, "share")
    notes: list[str] = []
    reference = ctx.start_accuracy  # set by apply_stage when the stage has a budget and validation data
    original = copy.deepcopy(artifact.model) if reference is not None else None
    history: list[dict] = []
    while True:
        model = artifact.model if original is None else copy.deepcopy(original)
        layers = select_layers(model, cfg.scope, "share")
        rows, on_grid = _cluster(model, layers, bits, cfg, ctx.seed)
        history += ctx.train(model, cfg.finetune, "share: centroid fine-tuning")
        accuracy = ctx.accuracy(model)
        if _within_budget(cfg, reference, accuracy) or min(bits.values()) >= MAX_BUDGET_BITS:
            break
        notes.append(
            f"accuracy budget {cfg.max_accuracy_drop:g} points: {reference - accuracy:.2f} lost at "
            f"{'/'.join(str(b) for b in sorted(set(bits.values())))} bits; one more bit per layer"
        )
        bits = {name: b if b >= MAX_BUDGET_BITS else b + 1 for name, b in bits.items()}
    if on_grid:
        notes.append(f"quantized layers shared on one integer grid per tensor: {', '.join(on_grid)}")
    record = StageRecord(
        stage="share", config=cfg.model_dump(mode="json"), layers=rows, accuracy=accuracy, history=history, notes=notes
    )
    quantization = artifact.quantization
    if quantization is not None and on_grid:
        quantization = quantization.model_copy(update={"per_tensor": sorted({*quantization.per_tensor, *on_grid})})
    return artifact.with_record(record, model=model, quantization=quantization)
