"""Timing calls: median and p90 after warm-up, with the conditions stated; interleaved comparisons.

Every latency comparison times its variants in one process, run by run in turn, so machine noise
hits all of them alike (docs/design.md).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Timing:
    """A measured latency in milliseconds and the conditions it was measured under."""

    median_ms: float
    p90_ms: float
    runs: int
    batch: int
    threads: int
    runtime: str = ""
    version: str = ""
    provenance: str = "measured on this machine"

    def to_dict(self) -> dict:
        return asdict(self)


def timing_from(samples_s: list[float], batch: int, threads: int, runtime: str = "", version: str = "") -> Timing:
    ms = np.asarray(samples_s) * 1e3
    return Timing(float(statistics.median(ms)), float(np.percentile(ms, 90)), len(ms), batch, threads, runtime, version)


def time_calls(
    fn: Callable[[], object], warmup: int = 5, runs: int | None = None, budget_s: float = 0.5
) -> list[float]:
    """Seconds per call of `fn`, after `warmup` calls; the run count fits `budget_s` (10..200) unless given."""
    for _ in range(max(warmup, 1)):
        fn()
    if runs is None:
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        runs = int(min(200, max(10, budget_s / once)))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def time_calls_interleaved(
    calls: dict[str, Callable[[], object]], batch: int, runs: int = 50, warmup: int = 5, threads: int = 2
) -> dict[str, Timing]:
    """Time several zero-argument calls (sessions, interpreters) alternately, run by run, so that machine
    noise hits all of them alike. The order is shuffled in every run (seeded): in a fixed order each call
    always follows the same one, and the call after a large model finds the caches emptied by it (the
    first of six ONNX files, after the fp32 one, measured 12% slower than in a shuffled order)."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {k: [] for k in calls}
    order, rng = list(calls), random.Random(0)
    for _ in range(runs):
        rng.shuffle(order)
        for key in order:
            start = time.perf_counter()
            calls[key]()
            samples[key].append(time.perf_counter() - start)
    return {k: timing_from(v, batch, threads) for k, v in samples.items()}
