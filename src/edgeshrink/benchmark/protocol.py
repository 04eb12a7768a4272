"""Latency the way MLPerf Tiny's performance mode measures it, in spirit: after a warm-up, several timed
windows, each at least `window_s` long and holding at least `min_runs` inferences; the latency of a window is
its elapsed time over its inferences, and the result is the median over windows, reported with their min and
max. (Not an MLPerf result: no official runner, no reference device.) The clock can be replaced for tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Protocol:
    """How long to time: `windows` windows of at least `window_s` seconds and `min_runs` calls each, after
    `warmup_s` seconds (and at least one call) of warm-up."""

    windows: int = 5
    window_s: float = 0.2
    min_runs: int = 5
    warmup_s: float = 0.1

    def __post_init__(self) -> None:
        if self.windows < 1 or self.window_s <= 0 or self.min_runs < 1 or self.warmup_s < 0:
            raise ValueError("windows and min_runs must be >= 1, window_s > 0 and warmup_s >= 0")


@dataclass
class WindowedLatency:
    """Median over windows of each window's mean latency, with the spread between windows."""

    median_ms: float
    min_ms: float
    max_ms: float
    windows_ms: list[float] = field(default_factory=list)
    runs: int = 0  # inferences timed, over all windows
    protocol: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _window(call: Callable[[], object], protocol: Protocol, clock: Callable[[], float]) -> tuple[float, int]:
    count, start = 0, clock()
    elapsed = 0.0
    while count < protocol.min_runs or elapsed < protocol.window_s:
        call()
        count += 1
        elapsed = clock() - start
    return elapsed, count


def measure_windows(
    call: Callable[[], object], protocol: Protocol = Protocol(), clock: Callable[[], float] = time.perf_counter
) -> WindowedLatency:
    """Time `call` (one inference) by the protocol."""
    start = clock()
    call()
    while clock() - start < protocol.warmup_s:
        call()
    per_window, runs = [], 0
    for _ in range(protocol.windows):
        elapsed, count = _window(call, protocol, clock)
        per_window.append(1e3 * elapsed / count)
        runs += count
    return WindowedLatency(
        statistics.median(per_window), min(per_window), max(per_window), per_window, runs, asdict(protocol)
    )
