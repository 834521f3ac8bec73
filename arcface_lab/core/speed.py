"""The uncertainty of a speedup: a ratio of two medians, each from a handful of timed repeats.

A speedup is ``median(reference latencies) / median(candidate latencies)``, both measured
in the same run. Its 95 % interval comes from a percentile bootstrap: both samples are
resampled with replacement, the ratio of medians is taken each time, and the interval is
the central 95 % of those ratios. With few repeats the interval is wide, and says so;
nothing is assumed about the latencies' distribution (they are skewed: a run can only be
slowed by the rest of the machine). The resampling is seeded, so a run's figures are
reproducible from its samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["LEVEL", "contains", "format_interval", "speedup_interval", "timing_interval"]

#: The confidence level of every speedup interval.
LEVEL = 0.95


def speedup_interval(
    reference_ms: Sequence[float] | np.ndarray,
    candidate_ms: Sequence[float] | np.ndarray,
    level: float = LEVEL,
    resamples: int = 4000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """``(lo, hi)`` of the ``level`` interval of the speedup, or None under 2 samples a side."""
    ref = np.asarray(reference_ms, dtype=np.float64)
    cand = np.asarray(candidate_ms, dtype=np.float64)
    if ref.size < 2 or cand.size < 2 or np.any(cand <= 0) or np.any(ref <= 0):
        return None
    rng = np.random.default_rng(seed)
    ref_medians = np.median(rng.choice(ref, (resamples, ref.size)), axis=1)
    cand_medians = np.median(rng.choice(cand, (resamples, cand.size)), axis=1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(ref_medians / cand_medians, [tail, 1.0 - tail])
    return float(lo), float(hi)


def contains(interval: Sequence[float] | None, value: float) -> bool:
    """Whether ``value`` lies in ``interval`` (False when there is none)."""
    return interval is not None and interval[0] <= value <= interval[1]


def timing_interval(
    reference: Mapping[str, Any] | None, timing: Mapping[str, Any] | None
) -> tuple[float, float] | None:
    """:func:`speedup_interval` of two timing records (``samples_ms`` each), None without."""
    if not reference or not timing:
        return None
    return speedup_interval(reference.get("samples_ms") or (), timing.get("samples_ms") or ())


def format_interval(interval: Sequence[float] | None) -> str | None:
    """``[lo, hi]`` to two decimals, as every table and verdict shows it (None: none)."""
    if not interval:
        return None
    lo, hi = interval
    return f"[{lo:.2f}, {hi:.2f}]"
