"""Tests for arcface_lab.core.metrics: drift, flip TTA, insightface's 10-fold verification."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from arcface_lab.core.metrics import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    _threshold_at_far,
    compare_verification,
    cosine_drift,
    flip_sum,
    kfold_splits,
    l2_normalize,
    mirror,
    pair_distances,
    pair_scores,
    roc_curve,
    verify,
)
from arcface_lab.errors import DataError, ValidationError

# ----------------------------------------------------------------------------- helpers


def hand_folds(sizes: list[int]) -> list[list[int]]:
    """Contiguous test folds of the given sizes (written out, not derived from n)."""
    folds, start = [], 0
    for size in sizes:
        folds.append(list(range(start, start + size)))
        start += size
    return folds


# Expected fold sizes of sklearn KFold(n_splits=10, shuffle=False), by hand.
FOLD_SIZES = {
    10: [1] * 10,
    23: [3, 3, 3, 2, 2, 2, 2, 2, 2, 2],
    37: [4, 4, 4, 4, 4, 4, 4, 3, 3, 3],
    50: [5] * 10,
    59: [6, 6, 6, 6, 6, 6, 6, 6, 6, 5],
}


def brute_distances(a: np.ndarray, b: np.ndarray) -> list[float]:
    out = []
    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        nx = math.sqrt(sum(v * v for v in x))
        ny = math.sqrt(sum(v * v for v in y))
        out.append(sum((u / nx - v / ny) ** 2 for u, v in zip(x, y, strict=True)))
    return out


def brute_accuracy(
    d: list[float], same: list[bool], sizes: list[int]
) -> tuple[list[float], list[float]]:
    """insightface calculate_roc written as plain loops: (fold thresholds, fold accuracies)."""
    thresholds = [i * 0.01 for i in range(400)]
    fold_thr, fold_acc = [], []
    for test in hand_folds(sizes):
        train = [j for j in range(len(d)) if j not in test]
        best_t, best_correct = None, -1
        for t in thresholds:
            correct = sum(1 for j in train if (d[j] < t) == same[j])
            if correct > best_correct:  # strictly greater: first maximum wins
                best_t, best_correct = t, correct
        assert best_t is not None
        fold_thr.append(best_t)
        fold_acc.append(sum(1 for j in test if (d[j] < best_t) == same[j]) / len(test))
    return fold_thr, fold_acc


def brute_tar(d: list[float], same: list[bool], sizes: list[int], target: float) -> list[float]:
    """insightface calculate_val as plain loops (interpolation between FAR levels)."""
    thresholds = [i * 0.001 for i in range(4000)]
    tars = []
    for test in hand_folds(sizes):
        train = [j for j in range(len(d)) if j not in test]
        neg = sorted(d[j] for j in train if not same[j])
        far = []
        k = 0
        for t in thresholds:  # thresholds ascend, so walk the sorted negatives once
            while k < len(neg) and neg[k] < t:
                k += 1
            far.append(k / len(neg))
        if max(far) < target:
            thr = 0.0
        else:
            lo = max(i for i, f in enumerate(far) if f <= target)
            hi = lo + 1
            thr = thresholds[lo] + (thresholds[hi] - thresholds[lo]) * (target - far[lo]) / (
                far[hi] - far[lo]
            )
        n_same = sum(1 for j in test if same[j])
        tars.append(sum(1 for j in test if same[j] and d[j] < thr) / n_same if n_same else 0.0)
    return tars


def random_pairs(n: int, seed: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    same[:2] = [True, False]
    base = rng.normal(size=(n, dim))
    noise = rng.uniform(0.5, 1.5) * rng.normal(size=(n, dim))
    other = np.where(same[:, None], base + noise, rng.normal(size=(n, dim)))
    return base * rng.uniform(0.5, 3.0, size=(n, 1)), other, same


def at_distances(d: np.ndarray, dim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Unit embedding pairs whose squared euclidean distance is ``d[i]``."""
    theta = np.arccos(1.0 - np.asarray(d, dtype=np.float64) / 2.0)
    a = np.zeros((len(d), dim))
    a[:, 0] = 1.0
    b = np.zeros((len(d), dim))
    b[:, 0] = np.cos(theta)
    b[:, 1] = np.sin(theta)
    return a, b


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize("n", sorted(FOLD_SIZES))
def test_kfold_splits_match_sklearn_kfold_without_shuffle(n: int) -> None:
    splits = kfold_splits(n, 10)
    assert [len(test) for _, test in splits] == FOLD_SIZES[n]
    for (train, test), expected in zip(splits, hand_folds(FOLD_SIZES[n]), strict=True):
        assert test.tolist() == expected
        assert sorted(train.tolist() + test.tolist()) == list(range(n))


def test_kfold_splits_refuse_too_few_items() -> None:
    with pytest.raises(ValidationError, match=r"need at least 10 pairs for 10-fold .* got 9"):
        kfold_splits(9, 10)
    with pytest.raises(ValidationError, match=r"n_folds: expected at least 2 folds, got 1"):
        kfold_splits(20, 1)


def test_threshold_grids_are_insightfaces() -> None:
    assert ACCURACY_THRESHOLDS.size == 400 and ACCURACY_THRESHOLDS[1] == pytest.approx(0.01)
    assert VAL_THRESHOLDS.size == 4000 and VAL_THRESHOLDS[-1] == pytest.approx(3.999)


# ----------------------------------------------------------------------------- verification


@pytest.mark.parametrize(("n", "seed"), [(23, 0), (23, 1), (37, 2), (50, 3), (59, 4)])
def test_verify_matches_brute_force(n: int, seed: int) -> None:
    a, b, same = random_pairs(n, seed)
    d = brute_distances(a, b)
    fold_thr, fold_acc = brute_accuracy(d, same.tolist(), FOLD_SIZES[n])
    result = verify(a, b, same)
    assert result.pairs == n
    assert list(result.fold_thresholds) == pytest.approx(fold_thr, abs=1e-12)
    assert list(result.fold_accuracies) == pytest.approx(fold_acc, abs=1e-12)
    assert result.accuracy == pytest.approx(np.mean(fold_acc), abs=1e-12)
    assert result.accuracy_std == pytest.approx(np.std(fold_acc), abs=1e-12)
    assert result.threshold == pytest.approx(np.mean(fold_thr), abs=1e-12)


def axis_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of +-unit axis vectors: distances exactly 0, 2 or 4, so 0 and 2 sit on the grids."""
    rng = np.random.default_rng(seed)
    eye = np.vstack([np.eye(3), -np.eye(3)])
    a = eye[rng.integers(0, 6, n)]
    b = eye[rng.integers(0, 6, n)]
    same = rng.random(n) < 0.5
    same[:2] = [True, False]
    return a, b, same


@pytest.mark.parametrize(("n", "seed"), [(23, 10), (37, 11), (50, 12)])
def test_verify_matches_brute_force_with_distances_on_the_threshold_grid(n: int, seed: int) -> None:
    a, b, same = axis_pairs(n, seed)
    d = brute_distances(a, b)
    assert set(d) <= {0.0, 2.0, 4.0}
    fold_thr, fold_acc = brute_accuracy(d, same.tolist(), FOLD_SIZES[n])
    result = verify(a, b, same, far=0.2)
    assert list(result.fold_thresholds) == pytest.approx(fold_thr, abs=1e-12)
    assert list(result.fold_accuracies) == pytest.approx(fold_acc, abs=1e-12)
    tars = brute_tar(d, same.tolist(), FOLD_SIZES[n], 0.2)
    assert result.tar == pytest.approx(np.mean(tars), abs=1e-12)


@pytest.mark.parametrize(("n", "seed", "far"), [(37, 5, 0.1), (50, 6, 0.2), (59, 7, 1e-3)])
def test_tar_at_far_matches_brute_force(n: int, seed: int, far: float) -> None:
    a, b, same = random_pairs(n, seed)
    d = brute_distances(a, b)
    tars = brute_tar(d, same.tolist(), FOLD_SIZES[n], far)
    result = verify(a, b, same, far=far)
    assert result.far == far
    assert result.tar == pytest.approx(np.mean(tars), abs=1e-12)
    assert result.tar_std == pytest.approx(np.std(tars), abs=1e-12)


def test_threshold_at_far_follows_scipy_slinear_on_repeated_far_values() -> None:
    far = np.array([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    thr = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert _threshold_at_far(far, thr, 0.25) == pytest.approx(1.5)  # last of 0 -> first of 0.5
    assert _threshold_at_far(far, thr, 0.5) == pytest.approx(3.0)  # last threshold at 0.5
    assert _threshold_at_far(far, thr, 0.75) == pytest.approx(3.5)
    assert _threshold_at_far(far, thr, 1.0) == pytest.approx(4.0)  # first reaching the max
    assert _threshold_at_far(far * 0.5, thr, 0.75) == 0.0  # never reached


def test_perfect_separation_gives_accuracy_one_and_full_tar() -> None:
    rng = np.random.default_rng(0)
    n = 40
    same = np.arange(n) % 2 == 0
    d = np.where(same, rng.uniform(0.1, 0.79, n), rng.uniform(2.0, 3.5, n))
    d[[0, 20]] = 0.795  # the largest same distance is in every training set
    a, b = at_distances(d)
    result = verify(a, b, same)
    assert result.accuracy == 1.0
    assert result.accuracy_std == 0.0
    assert result.fold_thresholds == pytest.approx([0.8] * 10)
    assert result.tar == 1.0


def test_verification_result_to_dict_is_json_with_the_documented_keys() -> None:
    a, b, same = random_pairs(23, 0)
    out = verify(a, b, same).to_dict()
    json.dumps(out)
    assert {
        "pairs",
        "accuracy",
        "accuracy_std",
        "threshold",
        "fold_thresholds",
        "fold_accuracies",
        "tar_at_far",
    } <= set(out)
    assert {"far", "tar", "tar_std"} <= set(out["tar_at_far"])
    assert out["pairs"] == 23 and len(out["fold_thresholds"]) == 10


def test_verify_accepts_integer_labels() -> None:
    a, b, same = random_pairs(23, 0)
    assert verify(a, b, same.astype(int)) == verify(a, b, same)


def test_verify_refuses_fewer_than_ten_pairs() -> None:
    a, b, same = random_pairs(9, 0)
    with pytest.raises(ValidationError) as err:
        verify(a, b, same)
    assert str(err.value) == "need at least 10 pairs for 10-fold verification, got 9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("b_short", r"emb_b: expected the same shape as emb_a \(12, 8\), got \(11, 8\)"),
        ("nan", r"emb_a: expected finite embeddings, got NaN/inf in 1 row\(s\), first at row 3"),
        ("one_d", r"emb_a: expected a 2-D \(N, D\) embedding array .* got shape \(12,\)"),
        ("labels", r"same: expected 12 labels \(one per pair\), got shape \(11,\)"),
        ("label_values", r"same: expected bool \(or 0/1\) labels, got dtype int64"),
        ("far", r"far: expected a false accept rate in \(0, 1\), got 0"),
    ],
)
def test_verify_input_errors(change: str, message: str) -> None:
    a, b, same = random_pairs(12, 0)
    far = 1e-3
    labels: np.ndarray = same
    if change == "b_short":
        b = b[:11]
    elif change == "nan":
        a[3, 2] = np.nan
    elif change == "one_d":
        a = a[:, 0]
    elif change == "labels":
        labels = same[:11]
    elif change == "label_values":
        labels = same.astype(np.int64) * 2
    else:
        far = 0
    with pytest.raises(ValidationError, match=message):
        verify(a, b, labels, far=far)


# ----------------------------------------------------------------------------- decision flips


def test_compare_identical_engine_has_no_flips() -> None:
    a, b, same = random_pairs(37, 1)
    out = compare_verification(a, b, a.copy(), b.copy(), same)
    assert out["decision_flips"] == 0
    assert out["flipped_pairs"] == []
    assert out["accuracy_delta"] == 0.0
    assert out["reference"] == out["engine"]
    json.dumps(out)


def test_compare_counts_exactly_the_pairs_moved_across_their_folds_threshold() -> None:
    n = 40
    rng = np.random.default_rng(3)
    same = np.arange(n) % 2 == 0
    ref_d = np.where(same, rng.uniform(0.2, 1.0, n), rng.uniform(2.2, 3.5, n))
    ref_d[[0, 20]] = 1.0  # the largest same distance is in every training set
    ref = verify(*at_distances(ref_d), same)
    fold_of = np.repeat(np.arange(10), 4)  # 40 pairs: ten folds of four, by hand
    eng_d = ref_d.copy()
    moved_across = [0, 5, 13, 22, 39]
    for p in moved_across:  # same pairs to just above, different pairs to just below
        t = ref.fold_thresholds[fold_of[p]]
        eng_d[p] = t + 0.004 if same[p] else t - 0.004
    moved_within = [2, 7, 30]
    for p in moved_within:  # moved, but stays on its side of the threshold
        eng_d[p] = ref_d[p] * 0.5 if same[p] else ref_d[p] + 0.3
    out = compare_verification(*at_distances(ref_d), *at_distances(eng_d), same)
    assert out["flipped_pairs"] == moved_across
    assert out["decision_flips"] == len(moved_across)
    assert out["reference"]["accuracy"] == 1.0
    assert out["accuracy_delta"] == pytest.approx(out["engine"]["accuracy"] - 1.0)
    assert out["accuracy_delta"] < 0


def test_compare_flips_use_the_reference_threshold_of_each_pairs_own_fold() -> None:
    a, b, same = random_pairs(59, 8)
    rng = np.random.default_rng(9)
    ea, eb = a + 0.3 * rng.normal(size=a.shape), b + 0.3 * rng.normal(size=b.shape)
    out = compare_verification(a, b, ea, eb, same)
    ref_d, eng_d = brute_distances(a, b), brute_distances(ea, eb)
    thresholds = out["reference"]["fold_thresholds"]
    expected = [
        p
        for k, fold in enumerate(hand_folds(FOLD_SIZES[59]))
        for p in fold
        if (ref_d[p] < thresholds[k]) != (eng_d[p] < thresholds[k])
    ]
    assert expected, "the perturbation should flip some decisions"
    assert out["flipped_pairs"] == expected


def test_compare_refuses_engine_with_other_pair_count() -> None:
    a, b, same = random_pairs(20, 0)
    with pytest.raises(ValidationError, match=r"eng_b: expected the same shape as eng_a"):
        compare_verification(a, b, a, b[:19], same)
    with pytest.raises(ValidationError, match=r"engine embeddings: expected 20 pairs .* got 19"):
        compare_verification(a, b, a[:19], b[:19], same)
    with pytest.raises(ValidationError, match=r"need at least 10 pairs for 10-fold .* got 8"):
        compare_verification(a[:8], b[:8], a[:8], b[:8], same[:8])


# ----------------------------------------------------------------------------- drift


def test_cosine_drift_on_known_cosines() -> None:
    cosines = np.array([0.9999, 0.95, 1.0, 0.5, 0.999, 0.99, -0.2, 0.9])
    n, dim = cosines.size, 16
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    e0, e1 = q[:, 0], q[:, 1]
    ref = np.outer(rng.uniform(0.5, 20, n), e0)  # norms vary: drift must normalize
    eng = (cosines[:, None] * e0 + np.sqrt(1 - cosines**2)[:, None] * e1) * rng.uniform(
        0.5, 20, (n, 1)
    )
    stats = cosine_drift(ref, eng.astype(np.float32), worst_k=3)
    assert stats.per_face == pytest.approx(cosines, abs=1e-6)
    assert stats.count == n
    assert stats.min == pytest.approx(-0.2, abs=1e-6)
    assert stats.mean == pytest.approx(cosines.mean(), abs=1e-6)
    assert stats.p001 == pytest.approx(np.quantile(cosines, 0.001), abs=1e-6)
    assert stats.p01 == pytest.approx(np.quantile(cosines, 0.01), abs=1e-6)
    assert stats.worst == (6, 3, 7)
    out = stats.to_dict()
    assert set(out) == {"count", "min", "p001", "p01", "mean", "worst"}
    assert json.loads(json.dumps(out))["worst"] == [6, 3, 7]


def test_cosine_drift_identical_is_one_and_worst_k_caps() -> None:
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    stats = cosine_drift(x, x.copy(), worst_k=10)
    assert stats.min == pytest.approx(1.0, abs=1e-6)
    assert sorted(stats.worst) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            np.ones((4, 3)),
            r"engine embeddings: expected the same shape as .* \(4, 8\), got \(4, 3\)",
        ),
        (np.full((4, 8), np.nan), r"engine embeddings: expected finite embeddings, got NaN/inf"),
        (np.ones((0, 8)), r"engine embeddings: expected a 2-D \(N, D\) .* N, D >= 1"),
    ],
)
def test_cosine_drift_errors(engine: np.ndarray, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        cosine_drift(np.ones((4, 8)), engine)


def test_cosine_drift_refuses_negative_worst_k() -> None:
    with pytest.raises(ValidationError, match=r"worst_k: expected a count >= 0, got -1"):
        cosine_drift(np.ones((2, 2)), np.ones((2, 2)), worst_k=-1)


# ----------------------------------------------------------------------------- flip TTA, scores


def test_mirror_flips_width() -> None:
    img = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    out = mirror(img)
    assert out.flags.c_contiguous
    assert np.array_equal(out[:, :, 0], img[:, :, 3])
    assert np.array_equal(mirror(out), img)
    with pytest.raises(DataError, match=r"images to mirror: expected dtype uint8"):
        mirror(img.astype(np.float32))


def test_flip_sum_is_normalized_sum() -> None:
    a = np.array([[3.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 4.0], [0.0, 5.0]])
    out = flip_sum(a, b)
    assert out == pytest.approx(np.array([[0.6, 0.8], [0.0, 1.0]]))
    with pytest.raises(ValidationError, match=r"emb_flipped: expected the same shape"):
        flip_sum(a, b[:1])


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert out == pytest.approx(np.array([[0.0, 0.0], [0.6, 0.8]]))


def test_pair_scores_are_cosines_matching_distances() -> None:
    a, b, _ = random_pairs(15, 2)
    scores = pair_scores(a, b)
    assert scores == pytest.approx(1.0 - pair_distances(a, b) / 2.0, abs=1e-12)
    assert scores[0] == pytest.approx(a[0] @ b[0] / np.linalg.norm(a[0]) / np.linalg.norm(b[0]))


def test_roc_curve_by_hand() -> None:
    far, tar = roc_curve(np.array([0.9, 0.8, 0.7, 0.6]), [True, False, True, False])
    assert far.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tar.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    far, tar = roc_curve(np.array([0.5, 0.5, 0.1]), [True, False, True])
    assert far.tolist() == [0.0, 1.0, 1.0]
    assert tar.tolist() == [0.0, 0.5, 1.0]


def test_roc_curve_needs_both_classes() -> None:
    with pytest.raises(ValidationError, match=r"same: expected both .* got 2 same and 0 different"):
        roc_curve(np.array([0.1, 0.2]), [True, True])
