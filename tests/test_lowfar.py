"""Low-FAR all-pairs 1:1 and 1:N identification, checked against brute force on small sets."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from arcface_lab.core import lowfar
from arcface_lab.core.lowfar import (
    all_pairs_verification,
    compare_all_pairs,
    compare_identification,
    identification,
    split_gallery,
)
from arcface_lab.errors import ValidationError

FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


def _faces(n: int, identities: int, dim: int = 16, spread: float = 0.9, seed: int = 0):
    """Embeddings clustered by identity (unequal cluster sizes) and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, identities, size=n))
    centres = rng.normal(size=(identities, dim))
    emb = centres[labels] + spread * rng.normal(size=(n, dim))
    return emb.astype(np.float32), labels


def _unit(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _brute_pairs(emb: np.ndarray, labels: np.ndarray):
    u = _unit(emb)
    i, j = np.triu_indices(len(u), 1)
    scores = (u @ u.T)[i, j]
    return scores, labels[i] == labels[j], i, j


def _brute_points(emb: np.ndarray, labels: np.ndarray, fars):
    scores, genuine, _, _ = _brute_pairs(emb, labels)
    imp = np.sort(scores[~genuine])[::-1]
    out = {}
    for far in fars:
        k = int(np.floor(far * imp.size + 1e-9))
        if k < 1:
            out[far] = None
            continue
        t = imp[k - 1]
        out[far] = (t, np.count_nonzero(scores[genuine] > t), np.count_nonzero(imp > t), k)
    return out


@pytest.mark.parametrize("block", [37, 1000])
def test_all_pairs_equals_brute_force(block: int) -> None:
    emb, labels = _faces(301, 60)
    res = all_pairs_verification(emb, labels, fars=FARS, block=block)
    _, genuine, _, _ = _brute_pairs(emb, labels)
    assert res.genuine_pairs == int(genuine.sum())
    assert res.impostor_pairs == int((~genuine).sum())
    assert res.identities == len(np.unique(labels))
    expected = _brute_points(emb, labels, FARS)
    for point in res.points:
        want = expected[point["far"]]
        if want is None:
            assert not point["supported"]
            assert "impostor pairs cannot measure a FAR of 1e-05" in point["reason"]
            continue
        t, gen_acc, imp_acc, k = want
        assert point["threshold"] == pytest.approx(float(t), abs=1e-6)
        assert point["genuine_accepted"] == gen_acc
        assert point["impostors_accepted"] == imp_acc
        assert point["impostors_at_threshold"] == k
        assert point["tar"] == gen_acc / res.genuine_pairs
        assert point["far_measured"] <= point["far"]


def test_coarse_histogram_still_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Brackets holding most of the scores (8 bins) give the same exact thresholds."""
    emb, labels = _faces(200, 40, seed=3)
    fine = all_pairs_verification(emb, labels, fars=FARS, block=64)
    monkeypatch.setattr(lowfar, "HISTOGRAM_BINS", 8)
    coarse = all_pairs_verification(emb, labels, fars=FARS, block=64)
    assert coarse.to_dict() == fine.to_dict()


def test_memmap_input_reads_the_same(tmp_path) -> None:
    emb, labels = _faces(150, 30)
    np.save(tmp_path / "emb.npy", emb)
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    assert (
        all_pairs_verification(mapped, labels, block=40).to_dict()
        == all_pairs_verification(emb, labels, block=40).to_dict()
    )


def test_string_labels_and_thresholds_lookup() -> None:
    emb, labels = _faces(120, 20)
    names = np.array([f"person_{k:03d}" for k in labels])
    res = all_pairs_verification(emb, names, fars=(1e-1, 1e-2))
    assert res.to_dict() == all_pairs_verification(emb, labels, fars=(1e-1, 1e-2)).to_dict()
    assert set(res.thresholds()) == {1e-1, 1e-2}
    assert res.tar_at(1e-1) is not None and res.tar_at(1e-6) is None


def test_memory_does_not_grow_with_the_set() -> None:
    """Peak allocation is set by the block, not by N (the N x N matrix would be 16x)."""

    def peak(n: int) -> int:
        emb, labels = _faces(n, n // 8, seed=5)
        tracemalloc.start()
        all_pairs_verification(emb, labels, fars=(1e-1, 1e-3), block=256)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(2000), peak(8000)
    assert large < 2 * small, (small, large)
    assert large < 8000 * 8000 * 4 / 10  # well under a float32 score matrix


def test_compare_all_pairs_counts_every_flip_at_the_reference_threshold() -> None:
    emb, labels = _faces(260, 50, seed=1)
    rng = np.random.default_rng(9)
    cand = emb + 0.15 * rng.normal(size=emb.shape).astype(np.float32)
    out = compare_all_pairs(emb, cand, labels, fars=FARS, block=50, max_listed=5)
    ref_scores, genuine, _, _ = _brute_pairs(emb, labels)
    cand_scores, _, _, _ = _brute_pairs(cand, labels)
    ref_points = {p["far"]: p for p in out["reference"]["points"]}
    saw_flips = False
    for point in out["points"]:
        if not point["supported"]:
            continue
        t = ref_points[point["far"]]["threshold"]
        assert point["threshold"] == t
        changed = (ref_scores > t) != (cand_scores > t)
        assert point["decision_flips"] == int(changed.sum())
        lost = changed & genuine & (ref_scores > t)
        assert point["genuine_lost"] == int(lost.sum())
        assert point["impostor_accepted"] == int((changed & ~genuine & (cand_scores > t)).sum())
        assert len(point["pairs"]) == min(5, point["decision_flips"])
        for a, b, r, c, gen in point["pairs"]:
            assert a < b and bool(labels[a] == labels[b]) == gen
            assert (r > t) != (c > t)
        assert point["tar_delta"] == pytest.approx(point["candidate_tar"] - point["reference_tar"])
        saw_flips |= point["decision_flips"] > 0
    assert saw_flips  # the noise is large enough to flip something: the test can fail


def test_identical_engines_flip_nothing() -> None:
    emb, labels = _faces(150, 30)
    out = compare_all_pairs(emb, emb.copy(), labels, fars=(1e-1, 1e-2), block=64)
    assert all(p["decision_flips"] == 0 and p["tar_delta"] == 0 for p in out["points"])
    ident = compare_identification(emb, emb.copy(), labels, fpirs=(1e-1,), block=64)
    assert ident["rank1_flips"] == 0 and ident["rank_delta"]["1"] == 0
    assert all(p["decision_flips"] == 0 for p in ident["points"])


def test_split_gallery_is_deterministic_and_complete() -> None:
    labels = np.array(["b", "a", "b", "c", "a", "d", "d", "e"])
    gallery, probes = split_gallery(labels, nonmated_fraction=0.4)
    # identities by first appearance: b, a, c, d, e; the last two (d, e) are not enrolled
    assert gallery.tolist() == [0, 1, 3]
    assert probes.tolist() == [2, 4, 5, 6, 7]
    assert np.array_equal(split_gallery(labels, 0.4)[0], gallery)


def _brute_identification(emb, labels, fpirs):
    gallery, probes = split_gallery(labels, 0.5)
    u = _unit(emb)
    s = u[probes] @ u[gallery].T
    g_labels = labels[gallery]
    mated = np.isin(labels[probes], g_labels)
    ranks, found_score = [], []
    for row, probe in zip(s[mated], probes[mated], strict=True):
        own = row[g_labels == labels[probe]][0]
        ranks.append(1 + int(np.count_nonzero(row > own)))
        found_score.append(own)
    ranks_a, own_a = np.array(ranks), np.array(found_score)
    nm_top = np.sort(s[~mated].max(axis=1))[::-1]
    fnir = {}
    for f in fpirs:
        k = int(np.floor(f * nm_top.size + 1e-9))
        if k >= 1:
            t = nm_top[k - 1]
            fnir[f] = (t, 1 - np.count_nonzero((ranks_a == 1) & (own_a > t)) / ranks_a.size)
    return ranks_a, fnir, int(mated.sum()), int((~mated).sum())


@pytest.mark.parametrize("block", [23, 500])
def test_identification_equals_brute_force(block: int) -> None:
    emb, labels = _faces(400, 90, spread=1.1, seed=2)
    res = identification(emb, labels, fpirs=(1e-1, 1e-2, 1e-3), ranks=(1, 5), block=block)
    ranks, fnir, mated, nonmated = _brute_identification(emb, labels, (1e-1, 1e-2, 1e-3))
    assert (res.mated_probes, res.nonmated_probes) == (mated, nonmated)
    assert res.ranks[1] == pytest.approx(np.mean(ranks <= 1))
    assert res.ranks[5] == pytest.approx(np.mean(ranks <= 5))
    assert 0 < res.ranks[1] < 1  # neither trivial nor impossible: the check can fail
    for point in res.points:
        if point["fpir"] not in fnir:
            assert not point["supported"] and "non-mated probes" in point["reason"]
            continue
        t, want = fnir[point["fpir"]]
        assert point["threshold"] == pytest.approx(float(t), abs=1e-6)
        assert point["fnir"] == pytest.approx(want)
        assert point["fpir_measured"] <= point["fpir"]


def test_compare_identification_lists_the_probes_that_flip() -> None:
    emb, labels = _faces(300, 70, spread=1.1, seed=4)
    rng = np.random.default_rng(1)
    cand = emb + 0.4 * rng.normal(size=emb.shape).astype(np.float32)
    out = compare_identification(emb, cand, labels, fpirs=(1e-1, 1e-2), block=64)
    assert out["rank1_flips"] > 0
    _, probes = split_gallery(labels, 0.5)
    for point in out["points"]:
        if point["supported"]:
            assert set(point["probes"]) <= set(probes.tolist())
            assert len(point["probes"]) == min(20, point["decision_flips"])


# -- the mixed case: a gallery enrolled with the reference, probes from the candidate ---


def _rotated(emb: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    """``emb`` turned by ``degrees`` in every plane of a random orthonormal basis:
    cosines within the set are kept, cosines across the two sets are not."""
    rng = np.random.default_rng(seed)
    dim = emb.shape[1]
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = np.deg2rad(degrees)
    turn = np.eye(dim)
    for k in range(0, dim - 1, 2):
        turn[k : k + 2, k : k + 2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return (emb @ (basis @ turn @ basis.T)).astype(np.float32)


def test_mixed_pairs_of_an_identical_candidate_are_the_references() -> None:
    emb, labels = _faces(240, 50, seed=5)
    out = compare_all_pairs(emb, emb.copy(), labels, fars=FARS)
    for own, ref in zip(out["mixed"]["tar_at_far"], out["reference"]["points"], strict=True):
        assert own == ref
    for t in out["mixed"]["threshold_transfer"]:
        if t["supported"]:
            assert t["far_measured"] == t["far_reference"]
            assert t["tar_measured"] == t["tar_reference"] and t["decision_flips"] == 0


def test_mixed_threshold_transfer_equals_a_brute_force_count() -> None:
    """A candidate near the reference (noise): the mixed scores, the reference's threshold
    applied to them, counted over the full matrix."""
    emb, labels = _faces(211, 40, seed=6)
    rng = np.random.default_rng(3)
    cand = emb + 0.25 * rng.normal(size=emb.shape).astype(np.float32)
    out = compare_all_pairs(emb, cand, labels, fars=FARS, block=29)
    i, j = np.triu_indices(len(emb), 1)
    mixed = (_unit(emb) @ _unit(cand).T)[i, j]
    ref_scores, genuine, _, _ = _brute_pairs(emb, labels)
    checked = 0
    for t in out["mixed"]["threshold_transfer"]:
        if not t["supported"]:
            continue
        thr = t["threshold"]
        assert t["far_measured"] == pytest.approx(np.mean(mixed[~genuine] > thr), abs=1e-12)
        assert t["tar_measured"] == pytest.approx(np.mean(mixed[genuine] > thr), abs=1e-12)
        flips = (ref_scores > thr) != (mixed > thr)
        # float32 products in blocks may differ from the full matrix in the last bit
        assert abs(t["decision_flips"] - int(flips.sum())) <= 2
        lost = int((flips & genuine & (ref_scores > thr)).sum())
        assert abs(t["genuine_lost"] - lost) <= 2
        checked += 1
    assert checked >= 2
    imp = np.sort(mixed[~genuine])[::-1]
    for p in out["mixed"]["tar_at_far"]:
        if p["supported"]:
            k = int(np.floor(p["far"] * imp.size + 1e-9))
            assert p["threshold"] == pytest.approx(float(imp[k - 1]), abs=1e-6)
            assert p["tar"] == pytest.approx(np.mean(mixed[genuine] > p["threshold"]), abs=1e-3)


def test_a_rotated_embedding_space_keeps_its_own_figures_and_breaks_the_mixed_ones() -> None:
    """Each engine alone is as good as the other (the rotation keeps every cosine within
    a set); a gallery of one searched with the other's probes is not."""
    emb, labels = _faces(300, 60, dim=32, spread=0.6, seed=7)
    cand = _rotated(emb, 60.0)
    pairs = compare_all_pairs(emb, cand, labels, fars=FARS)
    for p in pairs["points"]:
        if p["supported"]:
            assert p["tar_delta"] == pytest.approx(0.0, abs=0.01)
    for t in pairs["mixed"]["threshold_transfer"]:
        if t["supported"] and t["far_target"] <= 1e-2:
            assert t["tar_reference"] > 0.5 and t["tar_measured"] < 0.5 * t["tar_reference"]
            assert t["decision_flips"] > 0 and t["genuine_lost"] > 0
    ident = compare_identification(emb, cand, labels, fpirs=(1e-1,))
    assert ident["rank_delta"]["1"] == pytest.approx(0.0, abs=0.02)
    assert ident["mixed"]["rank"]["1"] < ident["reference"]["rank"]["1"] - 0.3
    [t] = ident["mixed"]["threshold_transfer"]
    assert t["fnir_measured"] > t["fnir_reference"] + 0.3 and t["decision_flips"] > 0


def test_mixed_identification_equals_a_brute_force_search() -> None:
    emb, labels = _faces(400, 90, spread=1.1, seed=8)
    rng = np.random.default_rng(4)
    cand = emb + 0.3 * rng.normal(size=emb.shape).astype(np.float32)
    out = compare_identification(emb, cand, labels, fpirs=(1e-1, 1e-2), block=31)
    gallery, probes = split_gallery(labels, 0.5)
    s = _unit(cand)[probes] @ _unit(emb)[gallery].T
    g_labels = labels[gallery]
    mated = np.isin(labels[probes], g_labels)
    own = np.array(
        [row[g_labels == labels[p]][0] for row, p in zip(s[mated], probes[mated], strict=True)]
    )
    rank1 = np.array([np.count_nonzero(row > o) == 0 for row, o in zip(s[mated], own, strict=True)])
    assert out["mixed"]["rank"]["1"] == pytest.approx(rank1.mean())
    top = s[~mated].max(axis=1)
    for t in out["mixed"]["threshold_transfer"]:
        if not t["supported"]:
            continue
        thr = t["threshold"]
        assert t["fpir_measured"] == pytest.approx(np.mean(top > thr))
        assert t["fnir_measured"] == pytest.approx(1 - np.mean(rank1 & (own > thr)))


def test_the_reenrolment_verdict_on_planted_engines() -> None:
    """Identical engine: not required. A rotated embedding space (each engine alone as
    good as the other): required, the reason naming the worst point. Operating points the
    set cannot measure: not judged."""
    from arcface_lab.config.params import ReenrolmentParams
    from arcface_lab.measure.acceptance import reenrolment

    emb, labels = _faces(300, 60, dim=32, spread=0.6, seed=7)
    limits = ReenrolmentParams(fars=(1e-2, 1e-3), fpirs=(1e-1,))

    def verdict(cand: np.ndarray, lim: ReenrolmentParams = limits) -> dict:
        pairs = compare_all_pairs(emb, cand, labels, fars=FARS)
        ident = compare_identification(emb, cand, labels, fpirs=(1e-1, 1e-2))
        return reenrolment(pairs["mixed"], ident["mixed"], lim)

    same = verdict(emb.copy())
    assert same["required"] is False and same["reason"].startswith("No re-enrolment needed")
    assert [p["holds"] for p in same["points"]] == [True, True, True]
    assert all(p["decision_flips"] == 0 for p in same["points"])
    turned = verdict(_rotated(emb, 60.0))
    assert turned["required"] is True and turned["reason"].startswith("Re-enrol the gallery")
    worst = max(turned["points"], key=lambda p: p["excess"])
    rate = "FAR" if worst["mode"] == "1:1" else "FPIR"
    assert f"{worst['mode']} at {rate} " in turned["reason"]
    assert not any(p["holds"] for p in turned["points"])
    far = next(p for p in turned["points"] if p["mode"] == "1:1" and p["far"] == 1e-3)
    assert far["tar_loss"] == pytest.approx(far["tar_reference"] - far["tar_mixed"])
    # a small, harmless perturbation holds under loose limits, fails under strict ones
    rng = np.random.default_rng(9)
    noisy = emb + 0.05 * rng.normal(size=emb.shape).astype(np.float32)
    loose = ReenrolmentParams(fars=(1e-2,), fpirs=(), tar_loss_max=0.2, far_inflation_max=5.0)
    assert verdict(noisy, loose)["required"] is False
    unmeasurable = ReenrolmentParams(fars=(1e-9,), fpirs=(1e-9,))
    nothing = verdict(emb.copy(), unmeasurable)
    assert nothing["required"] is None and nothing["reason"].startswith("not judged")
    assert [p["judged"] for p in nothing["points"]] == [False, False]


def test_threshold_transfer_on_a_pair_list_counts_each_pair() -> None:
    rng = np.random.default_rng(12)
    same = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    ref = np.where(same, rng.normal(0.6, 0.1, 1000), rng.normal(0.1, 0.1, 1000))
    out = lowfar.compare_pair_list(ref, ref.copy(), same, fars=(1e-1, 1e-2, 1e-4))
    [a, b, c] = out["threshold_transfer"]
    assert (
        a["decision_flips"] == b["decision_flips"] == 0 and a["tar_measured"] == a["tar_reference"]
    )
    assert not c["supported"] and "800 impostor pairs cannot measure a FAR of 0.0001" in c["reason"]
    moved = ref + np.where(same, -0.2, 0.2)  # mixed scores: genuine lower, impostors higher
    t = lowfar.compare_pair_list(ref, moved, same, fars=(1e-2,))["threshold_transfer"][0]
    thr = t["threshold"]
    assert thr == np.sort(ref[~same])[::-1][7]  # k = floor(0.01 * 800) = 8th highest
    assert t["tar_measured"] == np.mean(moved[same] > thr) < t["tar_reference"]
    assert t["far_measured"] == np.mean(moved[~same] > thr) > t["far_reference"]
    flips = (ref > thr) != (moved > thr)
    assert t["decision_flips"] == flips.sum() == t["genuine_lost"] + t["impostor_accepted"]
    with pytest.raises(ValidationError, match="need both"):
        lowfar.compare_pair_list(ref[:200], ref[:200], same[:200])
    with pytest.raises(ValidationError, match="as many reference scores"):
        lowfar.compare_pair_list(ref, ref[:5], same)


def test_bad_inputs_are_named() -> None:
    emb, labels = _faces(50, 10)
    bad = emb.copy()
    bad[17] = np.nan
    with pytest.raises(ValidationError, match="first at row 17"):
        all_pairs_verification(bad, labels)
    with pytest.raises(ValidationError, match="first at row 17"):
        identification(bad, labels)
    with pytest.raises(ValidationError, match="expected 50 identity labels"):
        all_pairs_verification(emb, labels[:-1])
    with pytest.raises(ValidationError, match="no impostor pairs"):
        all_pairs_verification(emb, np.zeros(50, dtype=int))
    with pytest.raises(ValidationError, match=r"fars: expected rates in \(0, 1\)"):
        all_pairs_verification(emb, labels, fars=(0.1, 1.5))
    with pytest.raises(ValidationError, match="candidate: expected the same shape as reference"):
        compare_all_pairs(emb, emb[:, :8], labels)
    with pytest.raises(ValidationError, match="block: expected a positive number"):
        all_pairs_verification(emb, labels, block=0)
    with pytest.raises(ValidationError, match="nonmated_fraction"):
        split_gallery(labels, 1.0)


# --------------------------------------------------------------------------- files and CLI


def test_the_command_reads_npy_shards_and_csv_labels(tmp_path, capsys) -> None:
    import json

    from arcface_lab.cli import main
    from arcface_lab.data.shards import ShardWriter

    emb, labels = _faces(300, 60, seed=4)
    cand = emb + 0.05 * np.random.default_rng(5).normal(size=emb.shape).astype(np.float32)
    np.save(tmp_path / "ref.npy", emb)
    with ShardWriter(tmp_path / "cand", {"input": "test"}, 300, 128) as writer:
        for index, start, stop in writer.pending():
            writer.write(index, cand[start:stop])
        writer.finish()
    (tmp_path / "labels.csv").write_text(
        "file,identity\n" + "".join(f"img{i}.png,person{k}\n" for i, k in enumerate(labels))
    )
    argv = ["lowfar", "--reference", str(tmp_path / "ref.npy"), "--candidate",
            str(tmp_path / "cand"), "--labels", str(tmp_path / "labels.csv"),
            "--fars", "1e-1,1e-3,1e-6", "--out", str(tmp_path / "l.json")]  # fmt: skip
    assert main(argv) == 0
    got = json.loads((tmp_path / "l.json").read_text())
    expected = compare_all_pairs(emb, cand, labels, fars=(1e-1, 1e-3, 1e-6))
    assert got["all_pairs"]["points"] == json.loads(json.dumps(expected["points"]))
    assert (got["faces"], got["identities"]) == (300, len(np.unique(labels)))
    out = capsys.readouterr().out
    assert "FAR 1e-06: n/a (" in out and "impostor pairs at the threshold" in out
    # the mixed case and its verdict, judged by the params' reenrolment: block
    mixed = json.loads(json.dumps(expected["mixed"]))
    assert got["mixed"]["threshold_transfer"] == mixed["threshold_transfer"]
    assert got["mixed"]["tar_at_far"] == mixed["tar_at_far"]
    assert set(got["mixed"]["identification"]) >= {"rank", "threshold_transfer"}
    assert "mixed" not in got["all_pairs"] and "mixed" not in got["identification"]
    assert got["reenrolment"]["limits"]["fars"] == [1e-3, 1e-4]
    assert "mixed at the reference's FAR 0.1 threshold: FAR " in out
    assert got["reenrolment"]["reason"] in out
    (tmp_path / "p.yaml").write_text("reenrolment: {fars: [0.1], fpirs: [0.1]}\n")
    assert main([*argv[:-2], "--params", str(tmp_path / "p.yaml"), *argv[-2:]]) == 0
    judged = json.loads((tmp_path / "l.json").read_text())["reenrolment"]
    assert [(p["mode"], p["judged"]) for p in judged["points"]] == [("1:1", True), ("1:N", True)]
    capsys.readouterr()

    (tmp_path / "short.txt").write_text("a\nb\n")
    argv[argv.index(str(tmp_path / "labels.csv"))] = str(tmp_path / "short.txt")
    assert main(argv) == 2
    assert "short.txt: 2 labels for 300 embeddings (one per face)" in capsys.readouterr().err


def test_bad_label_files_are_named(tmp_path) -> None:
    from arcface_lab.data.labels import load_labels
    from arcface_lab.errors import DataError

    (tmp_path / "a.csv").write_text("file,who\nx.png,1\n")
    with pytest.raises(DataError, match=r"a.csv: expected a header with an identity or label"):
        load_labels(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("identity\n1\n\n,\n")
    with pytest.raises(DataError, match=r"b.csv, line 4: empty identity"):
        load_labels(tmp_path / "b.csv")
    np.save(tmp_path / "c.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"c.npy: expected a 1-D array of integer or string"):
        load_labels(tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.array(["x", "y", "x"]))
    assert list(load_labels(tmp_path / "d.npy", 3)) == ["x", "y", "x"]


def _exact_index(emb: np.ndarray, miss: set[int] = frozenset()):  # type: ignore[assignment]
    """An index that searches exactly, except that it never lists the faces in ``miss``."""
    u = _unit(emb)

    def search(gallery, probes, k):
        s = u[probes] @ u[gallery].T
        s[:, np.isin(gallery, list(miss))] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        ids = np.where(np.isfinite(np.take_along_axis(s, order, 1)), gallery[order], -1)
        return ids, np.take_along_axis(s, order, 1)

    return search


def test_an_exact_index_agrees_with_the_exact_search_and_a_missing_entry_is_counted() -> None:
    emb, labels = _faces(240, 40, dim=16, spread=0.7, seed=11)
    exact = lowfar.identification(emb, labels, fpirs=(0.1,), ranks=(1, 5)).to_dict()
    same = lowfar.compare_identification_index(emb, labels, _exact_index(emb), fpirs=(0.1,))
    assert same["candidate"]["rank"] == exact["rank"] and same["rank1_flips"] == 0
    assert same["points"][0]["decision_flips"] == 0
    # the index never lists one enrolled identity's entry: its mated probes are missed,
    # and a probe whose best wrong entry was that one may now find its mate first
    gallery, probes = lowfar.split_gallery(labels)
    lost = int(gallery[0])
    u = _unit(emb)
    mated = probes[np.isin(labels[probes], labels[gallery])]
    scores = u[mated] @ u[gallery].T
    before = (
        gallery[np.argmax(scores, axis=1)]
        == gallery[np.searchsorted(labels[gallery], labels[mated])]
    )
    scores[:, gallery == lost] = -np.inf
    after = (
        gallery[np.argmax(scores, axis=1)]
        == gallery[np.searchsorted(labels[gallery], labels[mated])]
    ) & (labels[mated] != labels[lost])
    assert np.count_nonzero(before & ~after) > 0  # the check can fail
    got = lowfar.compare_identification_index(emb, labels, _exact_index(emb, {lost}))
    assert got["rank1_flips"] == int(np.count_nonzero(before != after))
    assert got["candidate"]["rank"]["1"] == pytest.approx(after.mean(), abs=1e-9)
    with pytest.raises(ValidationError, match=r"index search: expected ids and scores"):
        lowfar.compare_identification_index(
            emb, labels, lambda g, p, k: (np.zeros((1, k)), np.zeros((1, k)))
        )
