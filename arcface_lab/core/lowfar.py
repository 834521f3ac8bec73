"""Low-FAR verification and 1:N identification on a whole labelled set, in bounded memory.

Pairs-file verification (:mod:`arcface_lab.core.metrics`) cannot see what FP16 or
INT8 do at the operating points face-recognition systems ship (TAR at FAR 1e-4 to
1e-6): that needs every pair of a large labelled set, which is the IJB-B/IJB-C
protocol. Here the ``N x N`` score matrix is never held: scores are computed block
by block (``block x block`` float32 matrix products) and reduced on the fly, so
memory is ``O(N + block**2)`` however large the set. Written by hand because no
maintained library computes exact low-FAR thresholds without the full matrix.

Conventions (the same in every function here):

* a score is the cosine similarity of two L2-normalized embeddings, computed in
  float32; a pair is *accepted* when its score is strictly above the threshold;
* **1:1 all pairs**: every unordered pair ``i < j``; genuine when the labels are
  equal, impostor otherwise. At a target FAR ``f`` with ``n`` impostor pairs, the
  threshold is the ``k``-th highest impostor score, ``k = floor(f * n)``; so at most
  ``k - 1`` impostors are accepted and the measured FAR never exceeds the target.
  A target is *supported* when ``k >= 1``; ``k`` is reported as the number of
  impostor pairs behind the point. The exact ``k``-th score is found in two passes:
  a histogram of impostor scores (pass 1) brackets it, pass 2 keeps only the scores
  in that bracket;
* **1:N**: one gallery entry per enrolled identity (:func:`split_gallery` makes
  one from labels); a mated probe's rank is one plus the number of gallery entries
  scoring above its mate. At a target FPIR ``f`` over ``m`` non-mated probes the
  threshold is the ``k``-th highest of their top scores, ``k = floor(f * m)``; FNIR
  is the fraction of mated probes whose mate is not at rank 1 with a score above it
  (NIST FRVT's identification mode, candidate list of one);
* **reference vs candidate**: each result on its own, their difference, and the
  decisions that flip when both are judged at the *reference's* thresholds, the
  pairs or probes listed (at most ``max_listed`` per operating point);
* **mixed** (a gallery enrolled with the reference, probes embedded by the candidate):
  pair ``i < j`` scores the reference's ``i`` against the candidate's ``j``, and 1:N
  searches the candidate's probes in the reference's gallery. Beside its own TAR (FNIR)
  at each target, **threshold transfer** applies the reference's operating threshold to
  the mixed scores: the FAR (FPIR) and TAR (FNIR) it really gives there, and the
  decisions that differ from the reference's own. This is what a deployment that
  switches engines without re-enrolling its gallery sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcface_lab.core.metrics import same_shape
from arcface_lab.errors import ValidationError

__all__ = [
    "DEFAULT_FARS",
    "DEFAULT_FPIRS",
    "AllPairsResult",
    "IdentificationResult",
    "IndexSearch",
    "all_pairs_verification",
    "compare_all_pairs",
    "compare_identification",
    "compare_identification_index",
    "compare_pair_list",
    "identification",
    "split_gallery",
]

#: The FAR targets of the IJB-C 1:1 tables, as far as a set's impostor count supports.
DEFAULT_FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
#: The FPIR targets of 1:N open-set identification.
DEFAULT_FPIRS = (1e-1, 1e-2, 1e-3)
#: Histogram bins over the score range [-1, 1] used to bracket a threshold (pass 1).
HISTOGRAM_BINS = 1 << 16


# --------------------------------------------------------------------------- inputs


def _embeddings(x: object, name: str) -> np.ndarray:
    """A 2-D numeric array (a ``np.load(mmap_mode="r")`` memmap stays one)."""
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 1:
        raise ValidationError(
            f"{name}: expected a 2-D (N, D) embedding array with N >= 2, got shape {arr.shape}"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValidationError(f"{name}: expected numeric embeddings, got dtype {arr.dtype}")
    return arr


def _codes(labels: object, n: int, name: str = "labels") -> np.ndarray:
    """Identity labels (ints or strings) as int64 codes, one per face."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValidationError(
            f"{name}: expected {n} identity labels (one per face), got shape {arr.shape}"
        )
    _, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1)


def _block_size(block: int) -> int:
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise ValidationError(f"block: expected a positive number of rows, got {block!r}")
    return block


def _targets(values: Sequence[float], name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not out or any(not 0.0 < v < 1.0 for v in out):
        raise ValidationError(f"{name}: expected rates in (0, 1), got {list(values)!r}")
    return out


def _normalized(rows: np.ndarray, index: np.ndarray, name: str) -> np.ndarray:
    """``rows`` (face ``index[r]`` each) L2-normalized as float32; bad rows are errors."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        raise ValidationError(
            f"{name}: expected finite, non-zero embeddings, got {int(bad.sum())} bad row(s), "
            f"first at row {int(index[np.flatnonzero(bad)[0]])}"
        )
    unit: np.ndarray = rows / norms
    return unit


def _unit(emb: np.ndarray, start: int, stop: int, name: str) -> np.ndarray:
    """Rows ``start:stop`` of ``emb``, L2-normalized."""
    return _normalized(emb[start:stop], np.arange(start, stop), name)


def _same_shapes(arrays: Sequence[np.ndarray], names: Sequence[str]) -> None:
    for a, n in zip(arrays[1:], names[1:], strict=True):
        same_shape(arrays[0], a, names[0], n)


def _spans(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


# --------------------------------------------------------------------------- 1:1


@dataclass(frozen=True)
class _Block:
    """One block of the upper triangle: rows ``i``, columns ``j``, its valid pairs."""

    i: tuple[int, int]
    j: tuple[int, int]
    scores: tuple[np.ndarray, ...]  # one (rows, cols) float32 matrix per embedding set
    genuine: np.ndarray  # bool, valid pairs only (flattened)
    index: np.ndarray  # flat indices of the valid pairs within the block


def _pair_blocks(
    sets: Sequence[np.ndarray],
    names: Sequence[str],
    codes: np.ndarray,
    block: int,
    scored: Sequence[tuple[int, int]] | None = None,
) -> Iterator[_Block]:
    """Every unordered pair ``i < j`` once, a block at a time, scored once per entry of
    ``scored``: ``(a, b)`` scores row ``i`` of set ``a`` against row ``j`` of set ``b``
    (default: each set against itself)."""
    scored = scored or [(k, k) for k in range(len(sets))]
    spans = _spans(int(codes.size), block)
    for bi, (i0, i1) in enumerate(spans):
        rows = [_unit(e, i0, i1, n) for e, n in zip(sets, names, strict=True)]
        for j0, j1 in spans[bi:]:
            cols = (
                rows
                if j0 == i0
                else [_unit(e, j0, j1, n) for e, n in zip(sets, names, strict=True)]
            )
            scores = tuple(rows[a] @ cols[b].T for a, b in scored)
            same = codes[i0:i1, None] == codes[None, j0:j1]
            if j0 == i0:
                index = np.flatnonzero(np.triu(np.ones(same.shape, dtype=bool), k=1))
            else:
                index = np.arange(same.size)
            yield _Block((i0, i1), (j0, j1), scores, same.reshape(-1)[index], index)


def _bin_of(scores: np.ndarray) -> np.ndarray:
    b = np.floor((scores.astype(np.float64) + 1.0) * (HISTOGRAM_BINS / 2.0)).astype(np.int64)
    return np.clip(b, 0, HISTOGRAM_BINS - 1)


def _edge(b: int) -> float:
    if b <= 0:
        return -np.inf
    if b >= HISTOGRAM_BINS:
        return np.inf
    return -1.0 + 2.0 * b / HISTOGRAM_BINS


@dataclass(frozen=True)
class AllPairsResult:
    """All-pairs 1:1 verification of one embedding set (see the module docstring)."""

    faces: int
    identities: int
    genuine_pairs: int
    impostor_pairs: int
    points: tuple[dict[str, Any], ...]  # one per target FAR, supported or not

    def thresholds(self) -> dict[float, float]:
        """Threshold per supported target FAR."""
        return {p["far"]: p["threshold"] for p in self.points if p["supported"]}

    def tar_at(self, far: float) -> float | None:
        for p in self.points:
            if p["far"] == far and p["supported"]:
                return float(p["tar"])
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "faces": self.faces,
            "identities": self.identities,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "points": [dict(p) for p in self.points],
        }


class _Thresholds:
    """Passes 1 and 2 for one embedding set: exact k-th highest impostor scores."""

    def __init__(self, n_imp: int, fars: tuple[float, ...]) -> None:
        self.n_imp = n_imp
        self.fars = fars
        self.k = [int(np.floor(f * n_imp + 1e-9)) for f in fars]
        self.hist = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        self.windows: list[tuple[float, float]] = []
        self.above = [0] * len(fars)
        self.gen_above = [0] * len(fars)
        self.imp_window: list[list[np.ndarray]] = [[] for _ in fars]
        self.gen_window: list[list[np.ndarray]] = [[] for _ in fars]

    def count(self, scores: np.ndarray, genuine: np.ndarray) -> None:  # pass 1
        self.hist += np.bincount(_bin_of(scores[~genuine]), minlength=HISTOGRAM_BINS)

    def bracket(self) -> None:
        """Between the passes: the score window holding each k-th highest impostor."""
        from_top = np.cumsum(self.hist[::-1])[::-1]  # impostors in bin b or above
        for k in self.k:
            if k < 1:
                self.windows.append((np.inf, np.inf))
                continue
            b = int(np.flatnonzero(from_top >= k)[-1])
            # one bin of margin each side: the two passes' products need not agree to the ulp
            self.windows.append((_edge(b - 1), _edge(b + 2)))

    def keep(self, scores: np.ndarray, genuine: np.ndarray) -> None:  # pass 2
        imp = scores[~genuine]
        gen = scores[genuine]
        for t, (lo, hi) in enumerate(self.windows):
            if self.k[t] < 1:
                continue
            self.above[t] += int(np.count_nonzero(imp >= hi))
            self.gen_above[t] += int(np.count_nonzero(gen >= hi))
            self.imp_window[t].append(imp[(imp >= lo) & (imp < hi)])
            self.gen_window[t].append(gen[(gen >= lo) & (gen < hi)])

    def result(self, faces: int, identities: int, n_gen: int) -> AllPairsResult:
        points: list[dict[str, Any]] = []
        for t, far in enumerate(self.fars):
            k = self.k[t]
            if k < 1:
                points.append(
                    {
                        "far": far,
                        "supported": False,
                        "reason": f"{self.n_imp} impostor pairs cannot measure a FAR of {far:g}"
                        f" (it needs at least {int(np.ceil(1.0 / far))})",
                    }
                )
                continue
            window = np.sort(np.concatenate(self.imp_window[t]))[::-1]
            r = k - self.above[t] - 1
            if not 0 <= r < window.size:  # cannot happen with a deterministic product
                raise ValidationError(
                    f"FAR {far:g}: the impostor score bracket missed the threshold "
                    f"({self.above[t]} above, {window.size} in the bracket, k = {k})"
                )
            threshold = float(window[r])
            imp_acc = self.above[t] + int(np.count_nonzero(window > threshold))
            gen_win = np.concatenate(self.gen_window[t])
            gen_acc = self.gen_above[t] + int(np.count_nonzero(gen_win > threshold))
            points.append(
                {
                    "far": far,
                    "supported": True,
                    "threshold": threshold,
                    "tar": gen_acc / n_gen if n_gen else 0.0,
                    "far_measured": imp_acc / self.n_imp,
                    "impostors_at_threshold": k,
                    "impostors_accepted": imp_acc,
                    "genuine_accepted": gen_acc,
                }
            )
        return AllPairsResult(faces, identities, n_gen, self.n_imp, tuple(points))


def _pair_counts(codes: np.ndarray) -> tuple[int, int]:
    n = int(codes.size)
    sizes = np.bincount(codes).astype(np.int64)
    genuine = int((sizes * (sizes - 1) // 2).sum())
    return genuine, n * (n - 1) // 2 - genuine


def _all_pairs(
    sets: Sequence[np.ndarray],
    names: Sequence[str],
    labels: object,
    fars: Sequence[float],
    block: int,
    scored: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[_Thresholds], np.ndarray, int]:
    """Passes 1 and 2 over every pair, one state per entry of ``scored`` (see
    :func:`_pair_blocks`)."""
    arrays = [_embeddings(e, n) for e, n in zip(sets, names, strict=True)]
    _same_shapes(arrays, names)
    codes = _codes(labels, arrays[0].shape[0])
    targets = _targets(fars, "fars")
    n_gen, n_imp = _pair_counts(codes)
    if n_imp == 0:
        raise ValidationError("labels: every face has the same identity; no impostor pairs")
    scored = scored or [(k, k) for k in range(len(arrays))]
    states = [_Thresholds(n_imp, targets) for _ in scored]
    size = _block_size(block)
    for blk in _pair_blocks(arrays, names, codes, size, scored):
        for state, s in zip(states, blk.scores, strict=True):
            state.count(s.reshape(-1)[blk.index], blk.genuine)
    for state in states:
        state.bracket()
    for blk in _pair_blocks(arrays, names, codes, size, scored):
        for state, s in zip(states, blk.scores, strict=True):
            state.keep(s.reshape(-1)[blk.index], blk.genuine)
    return states, codes, n_gen


def all_pairs_verification(
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
    block: int = 2048,
) -> AllPairsResult:
    """TAR at each target FAR over every pair of a labelled set, without an N x N matrix.

    ``embeddings`` may be a memory-mapped ``.npy`` (``np.load(path, mmap_mode="r")``):
    only ``block`` rows are read and normalized at a time.
    """
    states, codes, n_gen = _all_pairs([embeddings], ["embeddings"], labels, fars, block)
    return states[0].result(int(codes.size), int(codes.max()) + 1, n_gen)


def _flip_record() -> dict[str, Any]:
    return {
        "genuine_lost": 0,
        "genuine_gained": 0,
        "impostor_accepted": 0,
        "impostor_rejected": 0,
        "pairs": [],
    }


def _count_flips(
    rec: dict[str, Any], blk: _Block, r: np.ndarray, c: np.ndarray, t: float, max_listed: int
) -> None:
    """Add to ``rec`` the pairs of ``blk`` judged differently at ``t`` by scores ``r``
    (the reference's) and ``c``."""
    changed = np.flatnonzero((r > t) != (c > t))
    if not changed.size:
        return
    gen = blk.genuine[changed]
    lost = r[changed] > t
    rec["genuine_lost"] += int(np.count_nonzero(gen & lost))
    rec["genuine_gained"] += int(np.count_nonzero(gen & ~lost))
    rec["impostor_accepted"] += int(np.count_nonzero(~gen & ~lost))
    rec["impostor_rejected"] += int(np.count_nonzero(~gen & lost))
    cols = blk.j[1] - blk.j[0]
    for p in changed[: max(0, max_listed - len(rec["pairs"]))]:
        flat = int(blk.index[p])
        rec["pairs"].append(
            [
                blk.i[0] + flat // cols,
                blk.j[0] + flat % cols,
                float(r[p]),
                float(c[p]),
                bool(blk.genuine[p]),
            ]
        )


def _flips(rec: dict[str, Any]) -> int:
    return int(
        rec["genuine_lost"]
        + rec["genuine_gained"]
        + rec["impostor_accepted"]
        + rec["impostor_rejected"]
    )


def compare_all_pairs(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
    block: int = 2048,
    max_listed: int = 20,
    mixed: bool = True,
) -> dict[str, Any]:
    """All-pairs verification of reference and candidate embeddings of the same faces.

    Per supported FAR: each one's TAR, the TAR delta (candidate minus reference), and
    the pairs whose decision flips at the reference's threshold (genuine pairs the
    candidate rejects, impostors it accepts, and the reverse), counted, the first
    ``max_listed`` listed as ``[i, j, reference score, candidate score, genuine]``.

    With ``mixed``, also the mixed comparisons (the reference's face ``i`` against the
    candidate's face ``j``): ``mixed.tar_at_far`` (their TAR at their own thresholds)
    and ``mixed.threshold_transfer`` (the reference's threshold applied to them: the
    FAR and TAR measured, and the pairs judged differently from the reference's own).
    """
    sets, names = [reference, candidate], ["reference", "candidate"]
    scored = [(0, 0), (1, 1), (0, 1)] if mixed else [(0, 0), (1, 1)]
    states, codes, n_gen = _all_pairs(sets, names, labels, fars, block, scored)
    faces, ids = int(codes.size), int(codes.max()) + 1
    results = [state.result(faces, ids, n_gen) for state in states]
    ref, cand = results[0], results[1]
    thresholds = ref.thresholds()
    flips = {f: _flip_record() for f in thresholds}
    moved = {f: _flip_record() for f in thresholds}  # mixed against the reference
    accepted = {f: [0, 0] for f in thresholds}  # mixed: genuine, impostor above t
    if thresholds:
        arrays = [_embeddings(e, n) for e, n in zip(sets, names, strict=True)]
        for blk in _pair_blocks(arrays, names, codes, _block_size(block), scored):
            r, c = (blk.scores[k].reshape(-1)[blk.index] for k in (0, 1))
            m = blk.scores[2].reshape(-1)[blk.index] if mixed else None
            for far, t in thresholds.items():
                _count_flips(flips[far], blk, r, c, t, max_listed)
                if m is not None:
                    _count_flips(moved[far], blk, r, m, t, max_listed)
                    accepted[far][0] += int(np.count_nonzero(m[blk.genuine] > t))
                    accepted[far][1] += int(np.count_nonzero(m[~blk.genuine] > t))
    points = []
    for p in ref.points:
        far = p["far"]
        if not p["supported"]:
            points.append({"far": far, "supported": False, "reason": p["reason"]})
            continue
        rec = flips[far]
        tar_c = cand.tar_at(far)
        points.append(
            {
                "far": far,
                "supported": True,
                "threshold": p["threshold"],
                "impostors_at_threshold": p["impostors_at_threshold"],
                "reference_tar": p["tar"],
                "candidate_tar": tar_c,
                "tar_delta": None if tar_c is None else tar_c - p["tar"],
                "decision_flips": _flips(rec),
                **rec,
            }
        )
    out = {"reference": ref.to_dict(), "candidate": cand.to_dict(), "points": points}
    if mixed:
        n_imp = ref.impostor_pairs
        transfer = []
        for p in ref.points:
            if not p["supported"]:
                transfer.append({"far_target": p["far"], "supported": False, "reason": p["reason"]})
                continue
            far, t = p["far"], p["threshold"]
            gen_acc, imp_acc = accepted[far]
            transfer.append(
                {
                    "far_target": far,
                    "supported": True,
                    "threshold": t,
                    "far_reference": p["far_measured"],
                    "tar_reference": p["tar"],
                    "far_measured": imp_acc / n_imp,
                    "tar_measured": gen_acc / n_gen if n_gen else 0.0,
                    "decision_flips": _flips(moved[far]),
                    **moved[far],
                }
            )
        own = results[2]
        out["mixed"] = {
            "convention": "pair i < j: the reference's face i (the gallery) against the "
            "candidate's face j (the probe)",
            "tar_at_far": [dict(p) for p in own.points],
            "threshold_transfer": transfer,
        }
    return out


def compare_pair_list(
    reference: np.ndarray,
    mixed: np.ndarray,
    same: np.ndarray,
    fars: Sequence[float] = DEFAULT_FARS,
) -> dict[str, Any]:
    """Threshold transfer on a list of labelled pairs (a pairs file, not a labelled set).

    ``reference``: each pair's score with both sides embedded by the reference;
    ``mixed``: with one side by the reference (the gallery) and the other by the
    candidate (the probe); ``same``: genuine or impostor. At each target FAR the
    reference's threshold is its ``k``-th highest impostor score (as everywhere here);
    applied to the mixed scores it gives the FAR and TAR measured and the pairs judged
    differently. Returns ``threshold_transfer`` in the form of
    :func:`compare_all_pairs`'s ``mixed``.
    """
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    m = np.asarray(mixed, dtype=np.float64).reshape(-1)
    genuine = np.asarray(same, dtype=bool).reshape(-1)
    if not (r.size == m.size == genuine.size) or not r.size:
        raise ValidationError(
            f"pairs: expected as many reference scores, mixed scores and labels, got "
            f"{r.size}, {m.size} and {genuine.size}"
        )
    n_gen, n_imp = int(genuine.sum()), int((~genuine).sum())
    if not n_gen or not n_imp:
        raise ValidationError(f"pairs: {n_gen} genuine and {n_imp} impostor; need both")
    imp = np.sort(r[~genuine])[::-1]
    transfer: list[dict[str, Any]] = []
    for far in _targets(fars, "fars"):
        k = int(np.floor(far * n_imp + 1e-9))
        if k < 1:
            transfer.append(
                {
                    "far_target": far,
                    "supported": False,
                    "reason": f"{n_imp} impostor pairs cannot measure a FAR of {far:g} "
                    f"(it needs at least {int(np.ceil(1.0 / far))})",
                }
            )
            continue
        t = float(imp[k - 1])
        changed = (r > t) != (m > t)
        lost = changed & genuine & (r > t)
        gained = changed & genuine & ~(r > t)
        transfer.append(
            {
                "far_target": far,
                "supported": True,
                "threshold": t,
                "far_reference": float(np.count_nonzero(r[~genuine] > t)) / n_imp,
                "tar_reference": float(np.count_nonzero(r[genuine] > t)) / n_gen,
                "far_measured": float(np.count_nonzero(m[~genuine] > t)) / n_imp,
                "tar_measured": float(np.count_nonzero(m[genuine] > t)) / n_gen,
                "decision_flips": int(changed.sum()),
                "genuine_lost": int(lost.sum()),
                "genuine_gained": int(gained.sum()),
                "impostor_accepted": int((changed & ~genuine & ~(r > t)).sum()),
                "impostor_rejected": int((changed & ~genuine & (r > t)).sum()),
            }
        )
    return {
        "convention": "pair (a, b): the reference's a (the gallery) against the candidate's b",
        "genuine_pairs": n_gen,
        "impostor_pairs": n_imp,
        "threshold_transfer": transfer,
    }


# --------------------------------------------------------------------------- 1:N


def split_gallery(
    labels: Sequence[Any] | np.ndarray, nonmated_fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Gallery and probe indices from identity labels, deterministically.

    Identities are taken in order of first appearance; the last
    ``round(nonmated_fraction * identities)`` are not enrolled (all their faces are
    non-mated probes). Each enrolled identity's first face is its gallery entry; its
    other faces are mated probes.
    """
    if not 0.0 <= nonmated_fraction < 1.0:
        raise ValidationError(
            f"nonmated_fraction: expected a fraction in [0, 1), got {nonmated_fraction!r}"
        )
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size < 2:
        raise ValidationError(f"labels: expected at least 2 identity labels, got {arr.shape}")
    _, first, codes = np.unique(arr, return_index=True, return_inverse=True)
    codes = codes.reshape(-1)
    order = np.argsort(first, kind="stable")  # identities by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    enrolled = rank < order.size - round(nonmated_fraction * order.size)
    gallery = np.sort(first[enrolled])
    is_gallery = np.zeros(arr.size, dtype=bool)
    is_gallery[gallery] = True
    probes = np.flatnonzero(~is_gallery)
    return gallery.astype(np.int64), probes.astype(np.int64)


@dataclass(frozen=True)
class _Search:
    """Per probe (rows ``probes`` of the embeddings): its mate's score and rank, its top score."""

    probes: np.ndarray  # face indices, ascending
    mated: np.ndarray  # bool
    mate_score: np.ndarray  # NaN for non-mated probes
    mate_rank: np.ndarray  # 0 for non-mated probes
    top_score: np.ndarray


def _read(emb: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
    """Rows ``rows`` (any order) of ``emb``, L2-normalized; a memmap is read in index order."""
    unique, back = np.unique(rows, return_inverse=True)
    unit: np.ndarray = _normalized(emb[unique], unique, name)[back.reshape(-1)]
    return unit


def _search(
    emb: np.ndarray, codes: np.ndarray, gallery: np.ndarray, probes: np.ndarray,
    name: str, block: int, enrolled: tuple[np.ndarray, str] | None = None,
) -> _Search:  # fmt: skip
    """Every probe against the whole gallery, ``block`` probes x ``block`` entries at a time.

    The probes are rows of ``emb``; the gallery's entries too, or rows of another set
    (``enrolled``: its embeddings and name), as when a gallery enrolled by one engine is
    searched with another's probes.
    """
    g_emb, g_name = enrolled if enrolled is not None else (emb, name)
    position = {int(c): i for i, c in enumerate(codes[gallery])}
    mate = np.array([position.get(int(c), -1) for c in codes[probes]], dtype=np.int64)
    n = int(probes.size)
    mate_score = np.full(n, np.nan, dtype=np.float32)
    mate_rank = np.zeros(n, dtype=np.int64)
    top = np.full(n, -np.inf, dtype=np.float32)
    g_spans = _spans(int(gallery.size), block)
    g_blocks = [_read(g_emb, gallery[g0:g1], g_name) for g0, g1 in g_spans]
    for p0, p1 in _spans(n, block):
        q = _read(emb, probes[p0:p1], name)
        m = mate[p0:p1]
        has = m >= 0
        own = np.full(p1 - p0, np.nan, dtype=np.float32)
        if has.any():
            own[has] = np.einsum("ij,ij->i", q[has], _read(g_emb, gallery[m[has]], g_name))
        above = np.zeros(p1 - p0, dtype=np.int64)
        for (g0, g1), g in zip(g_spans, g_blocks, strict=True):
            s = q @ g.T
            top[p0:p1] = np.maximum(top[p0:p1], s.max(axis=1))
            higher = s > own[:, None]
            # the mate's own column never counts: its product here may differ from
            # ``own`` in the last bit, and a mate must not outrank itself
            here = np.flatnonzero(has & (m >= g0) & (m < g1))
            higher[here, m[here] - g0] = False
            above += np.count_nonzero(higher, axis=1)
        mate_score[p0:p1] = own
        mate_rank[p0:p1] = np.where(has, above + 1, 0)
    return _Search(probes, mate >= 0, mate_score, mate_rank, top)


@dataclass(frozen=True)
class IdentificationResult:
    """1:N open-set identification of one embedding set (see the module docstring)."""

    gallery: int
    mated_probes: int
    nonmated_probes: int
    ranks: dict[int, float]
    points: tuple[dict[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "gallery": self.gallery,
            "mated_probes": self.mated_probes,
            "nonmated_probes": self.nonmated_probes,
            "rank": {str(k): v for k, v in self.ranks.items()},
            "points": [dict(p) for p in self.points],
        }


def _fpir_points(
    search: _Search, fpirs: tuple[float, ...], thresholds: dict[float, float] | None = None
) -> list[dict[str, Any]]:
    nonmated_top = np.sort(search.top_score[~search.mated])[::-1]
    m = int(nonmated_top.size)
    hit1 = search.mate_rank[search.mated] == 1
    mate_scores = search.mate_score[search.mated]
    points: list[dict[str, Any]] = []
    for f in fpirs:
        k = int(np.floor(f * m + 1e-9))
        if k < 1 or not hit1.size:
            why = (
                f"{m} non-mated probes cannot measure an FPIR of {f:g}"
                if k < 1
                else "no mated probes"
            )
            points.append({"fpir": f, "supported": False, "reason": why})
            continue
        t = float(nonmated_top[k - 1]) if thresholds is None else thresholds[f]
        found = hit1 & (mate_scores > t)
        points.append(
            {
                "fpir": f,
                "supported": True,
                "threshold": t,
                "fnir": 1.0 - float(np.count_nonzero(found)) / hit1.size,
                "fpir_measured": float(np.count_nonzero(nonmated_top > t)) / m,
                "nonmated_at_threshold": k,
            }
        )
    return points


def _identify(
    sets: Sequence[np.ndarray],
    names: Sequence[str],
    labels: object,
    gallery_index: np.ndarray | None,
    probe_index: np.ndarray | None,
    nonmated_fraction: float,
    block: int,
    mixed: bool = False,
) -> tuple[list[_Search], int]:
    """One search per set; with ``mixed``, one more: the second set's probes in the first
    set's gallery."""
    arrays = [_embeddings(e, n) for e, n in zip(sets, names, strict=True)]
    _same_shapes(arrays, names)
    n_faces = arrays[0].shape[0]
    codes = _codes(labels, n_faces)
    if gallery_index is None or probe_index is None:
        gallery_index, probe_index = split_gallery(codes, nonmated_fraction)
    g = np.unique(np.asarray(gallery_index, dtype=np.int64))
    p = np.unique(np.asarray(probe_index, dtype=np.int64))
    for what, idx in (("gallery_index", g), ("probe_index", p)):
        if idx.size == 0 or idx[0] < 0 or idx[-1] >= n_faces:
            raise ValidationError(f"{what}: expected face indices in [0, {n_faces}), got {idx}")
    if np.unique(codes[g]).size != g.size:
        raise ValidationError("gallery_index: expected one entry per identity, got repeats")
    searches = [_search(a, codes, g, p, n, block) for a, n in zip(arrays, names, strict=True)]
    if mixed:
        searches.append(_search(arrays[1], codes, g, p, names[1], block, (arrays[0], names[0])))
    return searches, int(g.size)


def _result(
    search: _Search, gallery: int, ranks: Sequence[int], points: list[dict[str, Any]]
) -> IdentificationResult:
    mated_ranks = search.mate_rank[search.mated]
    return IdentificationResult(
        gallery=gallery,
        mated_probes=int(mated_ranks.size),
        nonmated_probes=int(np.count_nonzero(~search.mated)),
        ranks={
            int(r): (float(np.count_nonzero(mated_ranks <= r)) / mated_ranks.size)
            for r in ranks
            if mated_ranks.size
        },
        points=tuple(points),
    )


def identification(
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
    ranks: Sequence[int] = (1, 5),
    nonmated_fraction: float = 0.5,
    gallery_index: np.ndarray | None = None,
    probe_index: np.ndarray | None = None,
    block: int = 2048,
) -> IdentificationResult:
    """Rank-k accuracy and FNIR at each FPIR, a probe block against the gallery at a time.

    The gallery and probes are ``gallery_index`` / ``probe_index`` rows of
    ``embeddings`` or, when not given, :func:`split_gallery` of ``labels``.
    """
    targets = _targets(fpirs, "fpirs")
    searches, g = _identify(
        [embeddings], ["embeddings"], labels, gallery_index, probe_index,
        nonmated_fraction, _block_size(block),
    )  # fmt: skip
    return _result(searches[0], g, ranks, _fpir_points(searches[0], targets))


def _decisions(search: _Search, t: float) -> np.ndarray:
    """Per probe, whether the system says yes at ``t``: a mated probe's mate found at
    rank 1 above it, a non-mated probe's false alarm."""
    hit1 = search.mate_rank == 1
    yes: np.ndarray = np.where(search.mated, hit1 & (search.mate_score > t), search.top_score > t)
    return yes


def _compare_searches(
    ref_s: _Search, cand_s: _Search, g: int, ranks: Sequence[int],
    targets: tuple[float, ...], max_listed: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """The reference's and the candidate's searches, their deltas and the probes that flip
    at the reference's thresholds; with the reference's own points."""
    ref_points = _fpir_points(ref_s, targets)
    ref = _result(ref_s, g, ranks, ref_points)
    cand = _result(cand_s, g, ranks, _fpir_points(cand_s, targets))
    ref_hit1 = ref_s.mate_rank == 1
    cand_hit1 = cand_s.mate_rank == 1
    rank1_flips = np.count_nonzero(ref_s.mated & (ref_hit1 != cand_hit1))
    points = []
    for rp, cp in zip(ref_points, cand.points, strict=True):
        if not rp["supported"]:
            points.append(rp)
            continue
        t = rp["threshold"]
        changed = np.flatnonzero(_decisions(ref_s, t) != _decisions(cand_s, t))
        points.append(
            {
                "fpir": rp["fpir"],
                "supported": True,
                "threshold": t,
                "reference_fnir": rp["fnir"],
                "candidate_fnir": cp.get("fnir"),
                "fnir_delta": None if "fnir" not in cp else cp["fnir"] - rp["fnir"],
                "decision_flips": int(changed.size),
                "probes": [int(i) for i in ref_s.probes[changed[:max_listed]]],
            }
        )
    out: dict[str, Any] = {
        "reference": ref.to_dict(),
        "candidate": cand.to_dict(),
        "rank_delta": {str(r): cand.ranks[r] - ref.ranks[r] for r in ref.ranks if r in cand.ranks},
        "rank1_flips": int(rank1_flips),
        "points": points,
    }
    return out, ref_points


def compare_identification(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
    ranks: Sequence[int] = (1, 5),
    nonmated_fraction: float = 0.5,
    block: int = 2048,
    max_listed: int = 20,
    mixed: bool = True,
) -> dict[str, Any]:
    """1:N identification of reference and candidate, their deltas and flipped probes.

    A probe flips at an FPIR when, at the reference's threshold, the two disagree on
    it: a mated probe found by one and missed by the other, or a non-mated probe that
    raises a false alarm in one only. ``rank1_flips`` counts mated probes whose mate
    is at rank 1 in one and not the other.

    With ``mixed``, also the candidate's probes searched in the reference's gallery:
    ``mixed.rank``, ``mixed.fnir_at_fpir`` (at its own thresholds) and
    ``mixed.threshold_transfer`` (the reference's threshold applied: the FPIR and FNIR
    measured, and the probes judged differently from the reference's own search).
    """
    targets = _targets(fpirs, "fpirs")
    searches, g = _identify(
        [reference, candidate], ["reference", "candidate"], labels, None, None,
        nonmated_fraction, _block_size(block), mixed,
    )  # fmt: skip
    ref_s, cand_s = searches[0], searches[1]
    out, ref_points = _compare_searches(ref_s, cand_s, g, ranks, targets, max_listed)
    ref_hit1 = ref_s.mate_rank == 1
    if mixed:
        mix_s = searches[2]
        own = _result(mix_s, g, ranks, _fpir_points(mix_s, targets))
        transfer: list[dict[str, Any]] = []
        nonmated = ~ref_s.mated
        hit1 = mix_s.mate_rank[mix_s.mated] == 1
        for rp in ref_points:
            if not rp["supported"]:
                transfer.append(
                    {"fpir_target": rp["fpir"], "supported": False, "reason": rp["reason"]}
                )
                continue
            t = rp["threshold"]
            found = hit1 & (mix_s.mate_score[mix_s.mated] > t)
            changed = np.flatnonzero(_decisions(ref_s, t) != _decisions(mix_s, t))
            transfer.append(
                {
                    "fpir_target": rp["fpir"],
                    "supported": True,
                    "threshold": t,
                    "fpir_reference": rp["fpir_measured"],
                    "fnir_reference": rp["fnir"],
                    "fpir_measured": float(np.count_nonzero(mix_s.top_score[nonmated] > t))
                    / int(np.count_nonzero(nonmated)),
                    "fnir_measured": 1.0 - float(np.count_nonzero(found)) / hit1.size,
                    "decision_flips": int(changed.size),
                    "probes": [int(i) for i in ref_s.probes[changed[:max_listed]]],
                }
            )
        mix_hit1 = mix_s.mate_rank == 1
        out["mixed"] = {
            "convention": "the candidate's probes searched in the reference's gallery",
            "rank": {str(k): v for k, v in own.ranks.items()},
            "rank1_flips": int(np.count_nonzero(ref_s.mated & (ref_hit1 != mix_hit1))),
            "fnir_at_fpir": [dict(p) for p in own.points],
            "threshold_transfer": transfer,
        }
    return out


#: ``search(gallery, probes, k)``: for each face index in ``probes`` (embeddings of the
#: index's own set), the ``k`` best gallery entries found, as face indices from
#: ``gallery`` (``-1``: none) and their scores, best first; shape ``(probes, k)`` each.
IndexSearch = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def _search_from_lists(
    codes: np.ndarray, gallery: np.ndarray, probes: np.ndarray, ids: np.ndarray,
    scores: np.ndarray, k: int,
) -> _Search:  # fmt: skip
    """A :class:`_Search` from the candidate lists an index returned: a mate outside its
    probe's ``k`` best ranks ``gallery + 1`` (not found), and the top score is the best
    listed one (``-inf`` when nothing was found)."""
    n = int(probes.size)
    if ids.shape != (n, k) or scores.shape != (n, k):
        raise ValidationError(
            f"index search: expected ids and scores of shape ({n}, {k}), "
            f"got {ids.shape} and {scores.shape}"
        )
    position = {int(c): int(i) for i, c in zip(gallery, codes[gallery], strict=True)}
    mate = np.array([position.get(int(c), -1) for c in codes[probes]], dtype=np.int64)
    listed = ids >= 0
    at = (ids == mate[:, None]) & listed & (mate[:, None] >= 0)
    found = at.any(axis=1)
    where = np.argmax(at, axis=1)
    mate_rank = np.where(mate >= 0, np.where(found, where + 1, gallery.size + 1), 0)
    mate_score = np.where(found, scores[np.arange(n), where], np.nan).astype(np.float32)
    top = np.where(listed[:, 0], scores[:, 0], -np.inf).astype(np.float32)
    return _Search(probes, mate >= 0, mate_score, mate_rank.astype(np.int64), top)


def compare_identification_index(
    reference: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    search: IndexSearch,
    fpirs: Sequence[float] = DEFAULT_FPIRS,
    ranks: Sequence[int] = (1, 5),
    nonmated_fraction: float = 0.5,
    block: int = 2048,
    max_listed: int = 20,
) -> dict[str, Any]:
    """1:N as an approximate index answers it, against the exact search of ``reference``.

    ``search`` is the index (see :data:`IndexSearch`): it is given the gallery and probe
    face indices of :func:`split_gallery` and returns each probe's ``max(ranks)`` best
    entries. A mate the index does not list (a list it did not visit, a code too coarse)
    is not found. The result has the shape of :func:`compare_identification` without
    ``mixed``: ``candidate`` is the index, judged at the exact search's thresholds.
    """
    targets = _targets(fpirs, "fpirs")
    codes = _codes(labels, _embeddings(reference, "reference").shape[0])
    gallery, probes = split_gallery(codes, nonmated_fraction)
    searches, g = _identify(
        [reference], ["reference"], codes, gallery, probes, nonmated_fraction, _block_size(block)
    )
    ref_s = searches[0]
    k = max(int(r) for r in ranks)
    ids, scores = search(gallery, probes, k)
    cand_s = _search_from_lists(
        codes, gallery, probes, np.asarray(ids, dtype=np.int64),
        np.asarray(scores, dtype=np.float32), k,
    )  # fmt: skip
    out, _ = _compare_searches(ref_s, cand_s, g, ranks, targets, max_listed)
    return out
