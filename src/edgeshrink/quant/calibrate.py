"""Activation ranges from calibration samples. Each method returns the real range [lo, hi] that the
0..255 grid will cover; values outside are clipped.

- minmax: the observed extremes (no clipping; one outlier widens every step).
- percentile: the given percentile of |x| on each side (clips the rare tail).
- mse: the range, shrunk from the extremes, that minimises the mean squared quantization error
  (rounding plus clipping) over the sample histogram.
- kl: the range that minimises the KL divergence between the sample histogram and its quantized
  version (TensorRT's entropy calibration, Migacz 2017), extended to signed ranges by shrinking both
  ends together.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from edgeshrink.errors import ConfigError
from edgeshrink.quant.fakequant import ACT_QMAX, ACT_QMIN

Method = Literal["minmax", "percentile", "mse", "kl"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "mse", "kl")
BINS = 2048
CANDIDATES = np.linspace(0.05, 1.0, 96)


def calibrate_range(
    samples: np.ndarray, lo: float, hi: float, method: Method = "minmax", percentile: float = 99.99
) -> tuple[float, float]:
    """The range [lo', hi'] chosen by `method`, from samples and the true observed extremes lo, hi."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if method == "minmax" or hi - lo < 1e-12 or samples.size == 0:
        return lo, hi
    if method == "percentile":
        p_lo = np.percentile(samples, 100.0 - percentile) if lo < 0 else 0.0
        p_hi = np.percentile(samples, percentile) if hi > 0 else 0.0
        return min(float(p_lo), 0.0), max(float(p_hi), 0.0)
    counts, edges = np.histogram(samples, bins=BINS, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    if method == "mse":
        return _best_mse(counts, centres, lo, hi)
    if method == "kl":
        return _best_kl(counts, lo, hi)
    raise ConfigError(f"unknown calibration method {method!r}; use one of: {', '.join(METHODS)}")


def _fake_quant(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    scale = (hi - lo) / (ACT_QMAX - ACT_QMIN)
    zero_point = np.clip(np.round(ACT_QMIN - lo / scale), ACT_QMIN, ACT_QMAX)
    q = np.clip(np.round(values / scale + zero_point), ACT_QMIN, ACT_QMAX)
    return (q - zero_point) * scale


def _best_mse(counts: np.ndarray, centres: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    los = (lo * CANDIDATES)[:, None]
    his = (hi * CANDIDATES)[:, None]
    los = np.where(np.abs(his - los) < 1e-12, lo, los)
    errors = (counts[None, :] * (centres[None, :] - _fake_quant(centres[None, :], los, his)) ** 2).sum(axis=1)
    best = int(np.argmin(errors))
    return float(los[best, 0]), float(his[best, 0])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / max(q.sum(), 1e-30)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / np.maximum(q[nz], 1e-30))))


def _quantized_histogram(p: np.ndarray, levels: int) -> np.ndarray:
    """Merge the bins of p into `levels` groups and spread each group's mass over its nonzero bins."""
    groups = np.array_split(np.arange(len(p)), min(levels, len(p)))
    q = np.zeros_like(p, dtype=np.float64)
    for idx in groups:
        chunk = p[idx]
        nonzero = chunk > 0
        if nonzero.any():
            q[idx[nonzero]] = chunk.sum() / nonzero.sum()
    return q


def _best_kl(counts: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """Candidate ranges shrink both ends by the same fraction; each keeps the bins inside it, with the
    clipped mass added to its edge bins, and is compared with its 256-level quantized version."""
    zero_bin = int(round(-lo / (hi - lo) * BINS))
    levels = ACT_QMAX - ACT_QMIN + 1
    best, best_range = np.inf, (lo, hi)
    for f in CANDIDATES:
        a = max(0, zero_bin - int(round(zero_bin * f)))
        b = min(BINS, zero_bin + int(round((BINS - zero_bin) * f)))
        if b - a < levels:
            continue
        p = counts[a:b].astype(np.float64).copy()
        p[0] += counts[:a].sum()
        p[-1] += counts[b:].sum()
        if p.sum() == 0:
            continue
        divergence = _kl(p, _quantized_histogram(counts[a:b].astype(np.float64), levels))
        if divergence < best:
            best = divergence
            width = (hi - lo) / BINS
            best_range = (lo + a * width, lo + b * width)
    return min(best_range[0], 0.0), max(best_range[1], 0.0)
