"""Timing harness: warm-up by time, repeats until stable or out of budget.

Like trtexec: warm up for ``warmup_s``, then time repeats until the
coefficient of variation (std / mean) of the latencies drops under
``target_cov`` (after at least ``min_repeats``) or ``budget_s`` runs out.
The CoV is reported either way and an unstable measurement is flagged, never
hidden. Speedups are ratios of medians measured in the same process on the
same inputs. GPU work is synchronized before each clock read by the
``sync`` callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Timing", "measure", "summarize"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one engine at one batch size (milliseconds)."""

    batch_size: int
    repeats: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    cov: float
    stable: bool
    warmup_runs: int

    @property
    def throughput_ips(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, float | int | bool]:
        d = asdict(self)
        d["throughput_ips"] = self.throughput_ips
        return d


def summarize(
    latencies_s: list[float] | np.ndarray, batch_size: int, target_cov: float, warmup_runs: int = 0
) -> Timing:
    """Statistics of measured latencies (seconds in, milliseconds out)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("summarize: no latencies measured")
    mean = float(ms.mean())
    cov = float(ms.std() / mean) if ms.size > 1 and mean > 0 else 0.0
    return Timing(
        batch_size=batch_size,
        repeats=int(ms.size),
        median_ms=float(np.median(ms)),
        mean_ms=mean,
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()),
        cov=cov,
        stable=cov <= target_cov,
        warmup_runs=warmup_runs,
    )


def measure(
    run: Callable[[], object],
    batch_size: int,
    warmup_s: float = 1.0,
    budget_s: float = 10.0,
    min_repeats: int = 3,
    target_cov: float = 0.025,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``run()`` (one batch) until its latencies are stable or ``budget_s`` is spent."""
    sync = sync or (lambda: None)
    warmup_runs = 0
    start = clock()
    while True:  # at least one warm-up run, then until warmup_s has passed
        run()
        sync()
        warmup_runs += 1
        if clock() - start >= warmup_s:
            break
    latencies: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        sync()
        latencies.append(clock() - t0)
        n = len(latencies)
        if n >= min_repeats:
            arr = np.asarray(latencies)
            if arr.std() / arr.mean() <= target_cov or clock() - start >= budget_s:
                break
    timing = summarize(latencies, batch_size, target_cov, warmup_runs)
    if not timing.stable:
        log.warning(
            "unstable timing at batch %d: CoV %.1f%% over %d repeats (target %.1f%%)",
            batch_size,
            100 * timing.cov,
            timing.repeats,
            100 * target_cov,
        )
    return timing
