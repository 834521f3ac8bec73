"""Is the engine still the same model? Numbers computed from embeddings alone.

Everything here is plain numpy on ``(N, D)`` embedding arrays; no engine,
model or threshold lives in this module (targets come from params and are
checked in one place, :mod:`arcface_lab.measure.acceptance`).

* :func:`cosine_drift`: per-face cosine similarity between the reference's and
  an engine's embedding of the same image, summarized as :class:`DriftStats`.
* :func:`verify`: insightface's 10-fold verification protocol
  (``recognition/arcface_torch/eval/verification.py``) re-implemented without
  MXNet, sklearn or scipy, which is why it is written by hand here:

  - distance is the squared euclidean distance between L2-normalized
    embeddings (``d = 2 - 2 cos``, in ``[0, 4]``); a pair is judged "same"
    when ``d < threshold`` (strictly);
  - folds are contiguous and unshuffled, sized like sklearn's
    ``KFold(n_splits, shuffle=False)``: the first ``n % n_splits`` folds get
    one extra pair (:func:`kfold_splits`);
  - accuracy: for each fold the threshold from ``np.arange(0, 4, 0.01)`` with
    the best accuracy on the other folds (first maximum) is scored on the
    fold; the result is the mean and (population) std over folds;
  - TAR at FAR (insightface's ``calculate_val``): thresholds
    ``np.arange(0, 4, 0.001)``; on the training folds the threshold giving
    the target FAR is found by piecewise-linear interpolation of
    threshold against FAR exactly as scipy's ``interp1d(kind="slinear")``
    did it up to scipy 1.8 (for repeated FAR values: from the last threshold
    of the lower value to the first threshold of the higher one; newer scipy
    refuses repeated values, scipy/scipy#21550, so insightface's code fails
    there); 0.0 when the target FAR is never reached. TAR/FAR are then
    measured on the test fold.

  Where insightface divides by zero (a fold without same or without
  different pairs, possible for small pair sets) the rate is taken as 0,
  the convention insightface's own ``calculate_accuracy`` uses.
* :func:`compare_verification`: reference vs engine on the same pairs,
  accuracy delta and decision flips at the reference's per-fold thresholds.
* :func:`flip_sum`, :func:`mirror`: insightface's flip test-time augmentation.
* :func:`pair_scores`, :func:`roc_curve`: arrays for plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arcface_lab.core.preprocess import check_images
from arcface_lab.errors import ValidationError

__all__ = [
    "ACCURACY_THRESHOLDS",
    "VAL_THRESHOLDS",
    "DriftStats",
    "VerificationResult",
    "compare_verification",
    "cosine_drift",
    "flip_sum",
    "kfold_splits",
    "l2_normalize",
    "mirror",
    "pair_distances",
    "pair_scores",
    "roc_curve",
    "same_shape",
    "verify",
]

#: Distance thresholds searched for the best accuracy (insightface ``calculate_roc``).
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
#: Distance thresholds searched for the FAR target (insightface ``calculate_val``).
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


# --------------------------------------------------------------------------- helpers


def _embeddings(x: object, name: str) -> np.ndarray:
    """``x`` as a finite float64 ``(N, D)`` array, or a :class:`ValidationError`."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{name}: expected a numeric (N, D) embedding array ({exc})"
        ) from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValidationError(
            f"{name}: expected a 2-D (N, D) embedding array with N, D >= 1, got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValidationError(
            f"{name}: expected finite embeddings, got NaN/inf in {rows.size} row(s), "
            f"first at row {int(rows[0])}"
        )
    return arr


def same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """A :class:`ValidationError` naming ``name_b`` unless it has the shape of ``name_a``."""
    if a.shape != b.shape:
        raise ValidationError(
            f"{name_b}: expected the same shape as {name_a} {a.shape}, got {b.shape}"
        )


def _labels(same: object, n: int, name: str = "same") -> np.ndarray:
    """``same`` as a bool ``(n,)`` array; integer labels must be 0 or 1."""
    arr = np.asarray(same)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValidationError(f"{name}: expected {n} labels (one per pair), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise ValidationError(f"{name}: expected bool (or 0/1) labels, got dtype {arr.dtype}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float64; all-zero rows stay zero.

    Same convention as ``sklearn.preprocessing.normalize``, which insightface uses.
    """
    arr = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    return arr / np.where(norms == 0, 1.0, norms)


def _distances(emb_a: object, emb_b: object, name_a: str, name_b: str) -> np.ndarray:
    a = _embeddings(emb_a, name_a)
    b = _embeddings(emb_b, name_b)
    same_shape(a, b, name_a, name_b)
    diff = l2_normalize(a) - l2_normalize(b)
    dist: np.ndarray = np.square(diff).sum(axis=1)
    return dist


def pair_distances(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Squared euclidean distance between the L2-normalized rows of ``emb_a`` and ``emb_b``."""
    return _distances(emb_a, emb_b, "emb_a", "emb_b")


def pair_scores(emb_a: np.ndarray, emb_b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each pair ``(emb_a[i], emb_b[i])``, float64 ``(N,)``."""
    a = _embeddings(emb_a, "emb_a")
    b = _embeddings(emb_b, "emb_b")
    same_shape(a, b, "emb_a", "emb_b")
    scores: np.ndarray = (l2_normalize(a) * l2_normalize(b)).sum(axis=1)
    return scores


# --------------------------------------------------------------------------- drift


@dataclass(frozen=True, eq=False)
class DriftStats:
    """Per-face cosine similarity between reference and engine embeddings.

    ``p001`` / ``p01`` are the 0.1% and 1% quantiles (linear interpolation);
    ``worst`` holds the indices of the lowest-cosine faces, lowest first.
    """

    count: int
    min: float
    p001: float
    p01: float
    mean: float
    worst: tuple[int, ...]
    per_face: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (``per_face`` left out)."""
        return {
            "count": self.count,
            "min": self.min,
            "p001": self.p001,
            "p01": self.p01,
            "mean": self.mean,
            "worst": list(self.worst),
        }


def cosine_drift(reference: np.ndarray, engine: np.ndarray, worst_k: int = 10) -> DriftStats:
    """Cosine similarity of ``engine[i]`` to ``reference[i]`` for every face ``i``."""
    if worst_k < 0:
        raise ValidationError(f"worst_k: expected a count >= 0, got {worst_k}")
    ref = _embeddings(reference, "reference embeddings")
    eng = _embeddings(engine, "engine embeddings")
    same_shape(ref, eng, "reference embeddings", "engine embeddings")
    per_face = np.sum(l2_normalize(ref) * l2_normalize(eng), axis=1)
    order = np.argsort(per_face, kind="stable")
    return DriftStats(
        count=int(per_face.size),
        min=float(per_face.min()),
        p001=float(np.quantile(per_face, 0.001)),
        p01=float(np.quantile(per_face, 0.01)),
        mean=float(per_face.mean()),
        worst=tuple(int(i) for i in order[:worst_k]),
        per_face=per_face,
    )


# --------------------------------------------------------------------------- flip TTA


def mirror(images: np.ndarray) -> np.ndarray:
    """Horizontal mirror of ``uint8 (N, H, W, 3)`` images (a contiguous copy)."""
    check_images(images, source="images to mirror")
    return np.ascontiguousarray(images[:, :, ::-1, :])


def flip_sum(emb_plain: np.ndarray, emb_flipped: np.ndarray) -> np.ndarray:
    """insightface's flip TTA: L2-normalized sum of an image's and its mirror's embedding."""
    plain = _embeddings(emb_plain, "emb_plain")
    flipped = _embeddings(emb_flipped, "emb_flipped")
    same_shape(plain, flipped, "emb_plain", "emb_flipped")
    return l2_normalize(plain + flipped)


# --------------------------------------------------------------------------- verification


def kfold_splits(n: int, n_folds: int = 10) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index arrays of sklearn's ``KFold(n_folds, shuffle=False)``.

    Test folds are contiguous; the first ``n % n_folds`` folds hold one extra item.
    """
    if n_folds < 2:
        raise ValidationError(f"n_folds: expected at least 2 folds, got {n_folds}")
    if n < n_folds:
        raise ValidationError(
            f"need at least {n_folds} pairs for {n_folds}-fold verification, got {n}"
        )
    sizes = np.full(n_folds, n // n_folds, dtype=np.int64)
    sizes[: n % n_folds] += 1
    indices = np.arange(n)
    splits = []
    start = 0
    for size in sizes:
        stop = start + int(size)
        test = indices[start:stop]
        train = np.concatenate([indices[:start], indices[stop:]])
        splits.append((train, test))
        start = stop
    return splits


def _less_counts(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` are strictly below each threshold."""
    return np.searchsorted(sorted_values, thresholds, side="left")


def _rate(num: int, den: int) -> float:
    return 0.0 if den == 0 else float(num) / float(den)


def _best_threshold(dist: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> float:
    """Threshold with the highest accuracy (first maximum) for ``dist < t`` meaning same."""
    d_same = np.sort(dist[same])
    d_diff = np.sort(dist[~same])
    correct = _less_counts(d_same, thresholds) + (d_diff.size - _less_counts(d_diff, thresholds))
    return float(thresholds[int(np.argmax(correct))])


def _accuracy(dist: np.ndarray, same: np.ndarray, threshold: float) -> float:
    predict = dist < threshold
    return float(np.count_nonzero(predict == same)) / float(dist.size)


def _threshold_at_far(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at which the (non-decreasing) ``far`` curve reaches ``target``.

    Mirrors scipy's (<= 1.8) ``interp1d(far, thresholds, kind="slinear")(target)``,
    which insightface calls, including its choice among repeated FAR values. When
    ``target`` equals the highest FAR and that value repeats, scipy's spline
    degenerates to 0.0; here it gives the first threshold reaching that FAR.
    """
    if far[-1] < target:
        return 0.0
    j = int(np.searchsorted(far, target, side="right")) - 1
    j = min(max(j, 0), far.size - 2)
    x0, x1 = float(far[j]), float(far[j + 1])
    if x1 == x0:
        return float(thresholds[int(np.searchsorted(far, target, side="left"))])
    w = 1.0 / (x1 - x0)
    return float(thresholds[j] * (w * (x1 - target)) + thresholds[j + 1] * (w * (target - x0)))


def _tar_far(dist: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    accept = dist < threshold
    tar = _rate(int(np.count_nonzero(accept & same)), int(np.count_nonzero(same)))
    far = _rate(int(np.count_nonzero(accept & ~same)), int(np.count_nonzero(~same)))
    return tar, far


@dataclass(frozen=True)
class VerificationResult:
    """k-fold verification accuracy and TAR at a FAR target (insightface protocol).

    Thresholds are squared euclidean distances between unit embeddings
    (``d = 2 - 2 cos``); ``threshold`` is the mean of ``fold_thresholds``.
    """

    pairs: int
    n_folds: int
    accuracy: float
    accuracy_std: float
    threshold: float
    fold_thresholds: tuple[float, ...]
    fold_accuracies: tuple[float, ...]
    far: float
    tar: float
    tar_std: float
    far_measured: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "pairs": self.pairs,
            "folds": self.n_folds,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "threshold": self.threshold,
            "fold_thresholds": list(self.fold_thresholds),
            "fold_accuracies": list(self.fold_accuracies),
            "tar_at_far": {
                "far": self.far,
                "tar": self.tar,
                "tar_std": self.tar_std,
                "far_measured": self.far_measured,
            },
        }

    def pair_thresholds(self) -> np.ndarray:
        """For every pair, the threshold of the fold in which it was a test item."""
        out = np.empty(self.pairs, dtype=np.float64)
        for (_, test), threshold in zip(
            kfold_splits(self.pairs, self.n_folds), self.fold_thresholds, strict=True
        ):
            out[test] = threshold
        return out


def _verify_distances(
    dist: np.ndarray, same: np.ndarray, n_folds: int, far: float
) -> VerificationResult:
    n = int(dist.size)
    fold_thresholds: list[float] = []
    fold_accuracies: list[float] = []
    tars: list[float] = []
    fars: list[float] = []
    for train, test in kfold_splits(n, n_folds):
        threshold = _best_threshold(dist[train], same[train], ACCURACY_THRESHOLDS)
        fold_thresholds.append(threshold)
        fold_accuracies.append(_accuracy(dist[test], same[test], threshold))

        d_diff = np.sort(dist[train][~same[train]])
        if d_diff.size:
            far_train = _less_counts(d_diff, VAL_THRESHOLDS) / float(d_diff.size)
        else:
            far_train = np.zeros(VAL_THRESHOLDS.size)
        val_threshold = _threshold_at_far(far_train, VAL_THRESHOLDS, far)
        tar, far_test = _tar_far(dist[test], same[test], val_threshold)
        tars.append(tar)
        fars.append(far_test)
    return VerificationResult(
        pairs=n,
        n_folds=n_folds,
        accuracy=float(np.mean(fold_accuracies)),
        accuracy_std=float(np.std(fold_accuracies)),
        threshold=float(np.mean(fold_thresholds)),
        fold_thresholds=tuple(fold_thresholds),
        fold_accuracies=tuple(fold_accuracies),
        far=float(far),
        tar=float(np.mean(tars)),
        tar_std=float(np.std(tars)),
        far_measured=float(np.mean(fars)),
    )


def _check_far(far: float) -> None:
    if not 0.0 < far < 1.0:
        raise ValidationError(f"far: expected a false accept rate in (0, 1), got {far!r}")


def verify(
    emb_a: np.ndarray,
    emb_b: np.ndarray,
    same: Sequence[bool] | np.ndarray,
    n_folds: int = 10,
    far: float = 1e-3,
) -> VerificationResult:
    """k-fold verification of pairs ``(emb_a[i], emb_b[i])`` labelled ``same[i]``.

    For insightface's "Accuracy-Flip" pass flip-summed embeddings (:func:`flip_sum`).
    """
    _check_far(far)
    dist = pair_distances(emb_a, emb_b)
    labels = _labels(same, dist.size)
    kfold_splits(dist.size, n_folds)  # fails early, with the pair count, when too few
    return _verify_distances(dist, labels, n_folds, far)


def compare_verification(
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    eng_a: np.ndarray,
    eng_b: np.ndarray,
    same: Sequence[bool] | np.ndarray,
    n_folds: int = 10,
    far: float = 1e-3,
) -> dict[str, Any]:
    """Verification of the reference and of an engine on the same pairs.

    ``decision_flips`` counts pairs judged differently (same vs different) by
    reference and engine distances, each pair judged at the reference's
    threshold for the fold in which it was a test item; ``flipped_pairs``
    lists their indices. ``accuracy_delta`` is engine minus reference (a
    fraction, not percent points).
    """
    _check_far(far)
    ref_dist = _distances(ref_a, ref_b, "ref_a", "ref_b")
    eng_dist = _distances(eng_a, eng_b, "eng_a", "eng_b")
    if eng_dist.shape != ref_dist.shape:
        raise ValidationError(
            f"engine embeddings: expected {ref_dist.size} pairs like the reference, "
            f"got {eng_dist.size}"
        )
    labels = _labels(same, ref_dist.size)
    kfold_splits(ref_dist.size, n_folds)
    ref = _verify_distances(ref_dist, labels, n_folds, far)
    eng = _verify_distances(eng_dist, labels, n_folds, far)
    thresholds = ref.pair_thresholds()
    flipped = np.flatnonzero((ref_dist < thresholds) != (eng_dist < thresholds))
    return {
        "reference": ref.to_dict(),
        "engine": eng.to_dict(),
        "accuracy_delta": eng.accuracy - ref.accuracy,
        "tar_delta": eng.tar - ref.tar,
        "decision_flips": int(flipped.size),
        "flipped_pairs": [int(i) for i in flipped],
    }


def roc_curve(
    scores: np.ndarray, same: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """False and true accept rates for every score threshold, for plotting.

    ``scores`` are similarities (higher means "same", e.g. :func:`pair_scores`).
    Point ``k`` accepts the pairs whose score is at least the ``k``-th highest
    distinct score; the curve starts at ``(0, 0)`` and ends at ``(1, 1)``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size < 1:
        raise ValidationError(f"scores: expected a 1-D array of pair scores, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValidationError("scores: expected finite pair scores, got NaN/inf")
    labels = _labels(same, s.size)
    n_same = int(np.count_nonzero(labels))
    n_diff = int(labels.size - n_same)
    if n_same == 0 or n_diff == 0:
        raise ValidationError(
            f"same: expected both same and different pairs for a ROC curve, "
            f"got {n_same} same and {n_diff} different"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    far_ = np.r_[0.0, fp[last] / n_diff]
    tar = np.r_[0.0, tp[last] / n_same]
    return far_, tar
