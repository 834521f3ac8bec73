"""A speedup's 95 % interval: a bootstrap of the ratio of medians, seeded, honest about few
repeats."""

from __future__ import annotations

import numpy as np

from arcface_lab.core.speed import contains, format_interval, speedup_interval, timing_interval


def test_the_interval_holds_the_ratio_of_medians_and_narrows_with_repeats() -> None:
    rng = np.random.default_rng(1)
    ref_few, cand_few = 100 * rng.lognormal(0, 0.05, 5), 50 * rng.lognormal(0, 0.05, 5)
    ref_many, cand_many = 100 * rng.lognormal(0, 0.05, 60), 50 * rng.lognormal(0, 0.05, 60)
    few = speedup_interval(ref_few, cand_few)
    many = speedup_interval(ref_many, cand_many)
    assert few is not None and many is not None
    assert contains(few, np.median(ref_few) / np.median(cand_few))
    assert contains(many, 2.0) and many[1] - many[0] < few[1] - few[0]
    assert many[1] - many[0] < 0.1  # +-2.5 % around 2x with 60 repeats at 5 % CoV


def test_the_interval_is_reproducible_and_needs_two_samples_a_side() -> None:
    ref, cand = [10.0, 11.0, 12.0], [5.0, 5.5, 6.5]
    assert speedup_interval(ref, cand) == speedup_interval(ref, cand)
    assert speedup_interval([10.0], cand) is None
    assert speedup_interval(ref, [5.0]) is None
    assert not contains(None, 1.0)


def test_a_drifting_reference_widens_the_interval() -> None:
    """Pooling a reference that slowed by 10 % between its two timings gives an interval
    that covers both ends, not the tight one of either alone."""
    cand = [50.0, 50.5, 49.5, 50.2, 49.8]
    early = [100.0, 100.5, 99.5, 100.2, 99.8]
    late = [110.0, 110.5, 109.5, 110.2, 109.8]
    alone = speedup_interval(early, cand)
    pooled = speedup_interval(early + late, cand)
    assert alone is not None and pooled is not None
    assert pooled[1] - pooled[0] > 3 * (alone[1] - alone[0])
    assert pooled[0] < 2.05 and pooled[1] > 2.15


def test_one_reading_and_one_format_of_an_interval() -> None:
    ref = {"samples_ms": [10.0, 11.0, 12.0]}
    cand = {"samples_ms": [5.0, 5.5, 6.5]}
    assert timing_interval(ref, cand) == speedup_interval([10.0, 11.0, 12.0], [5.0, 5.5, 6.5])
    assert timing_interval(None, cand) is None and timing_interval(ref, {}) is None
    assert format_interval((1.954, 2.106)) == "[1.95, 2.11]" and format_interval(None) is None
