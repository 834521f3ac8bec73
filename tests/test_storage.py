"""What storing the gallery costs: float16, int8 and PQ galleries against float32."""

from __future__ import annotations

import numpy as np
import pytest

from arcface_lab.config.params import Params
from arcface_lab.errors import InputError, ParamsError
from arcface_lab.measure.storage import storage_table, stored
from tests.test_lowfar import _faces


def test_each_storage_reads_back_close_to_float32_and_says_its_size() -> None:
    emb, _ = _faces(64, 8, dim=128, seed=1)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    half, size16 = stored(emb, "float16")
    eight, size8 = stored(emb, "int8")
    assert (size16, size8) == (256, 132)
    cos16, cos8 = np.sum(unit * half, axis=1), np.sum(unit * eight, axis=1)
    assert cos16.min() > 0.99999 and 0.999 < cos8.min() < cos16.min()
    assert np.allclose(np.linalg.norm(eight, axis=1), 1.0, atol=1e-6)
    with pytest.raises(InputError, match=r"gallery storage 'int4': expected one of"):
        stored(emb, "int8".replace("8", "4"))


def test_the_storage_table_judges_each_gallery_at_float32s_thresholds() -> None:
    """float16 keeps every decision; int8 about as many; the figures are float32's where
    nothing moved, and a storage that cannot run here is a row with its reason."""
    emb, labels = _faces(300, 60, dim=128, spread=2.0, seed=2)
    table = storage_table(emb, labels, ("float16", "int8"), fars=(1e-2, 1e-3), fpirs=(1e-1,))
    assert table["float32_bytes_per_face"] == 512 and table["faces"] == 300
    f16, i8 = table["storages"]
    assert f16["storage"] == "float16" and f16["compression"] == 2.0
    for v in f16["verification"]:
        assert abs(v["tar"] - v["tar_float32"]) <= 2 / 300 and v["decision_flips"] <= 2
    assert f16["rank1"] == pytest.approx(f16["rank1_float32"], abs=0.02)
    assert i8["bytes_per_face"] == 132 and i8["cosine_min"] > 0.999
    assert 0 < i8["rank1_float32"] < 1  # the check can fail: neither trivial nor impossible
    few = storage_table(emb[:40], labels[:40], ("pq64",), fars=(1e-1,), fpirs=(1e-1,))
    [row] = few["storages"]
    assert not row["supported"] and ("faiss" in row["reason"] or "256" in row["reason"])


def test_pq64_with_faiss_costs_some_decisions_for_64_bytes() -> None:
    pytest.importorskip("faiss")
    emb, labels = _faces(400, 80, dim=128, spread=2.0, seed=3)
    [pq] = storage_table(emb, labels, ("pq64",), fars=(1e-2,), fpirs=(1e-1,))["storages"]
    assert pq["supported"] and pq["bytes_per_face"] == 64 and pq["compression"] == 8.0
    assert 0.5 < pq["cosine_min"] < 0.9999  # lossy, and measured
    [v] = pq["verification"]
    assert v["tar"] <= v["tar_float32"] + 0.05 and v["decision_flips"] >= 0


def test_scale_gallery_storage_params_are_checked() -> None:
    scale = Params.from_mapping({"scale": {"gallery_storage": ["float16", "pq64"]}}).scale
    assert scale.gallery_storage == ("float16", "pq64")
    assert Params.from_mapping({}).scale.gallery_storage == ()
    with pytest.raises(ParamsError, match=r"scale.gallery_storage.0: expected one of float16"):
        Params.from_mapping({"scale": {"gallery_storage": ["bf16"]}}, "p.yaml")


def test_lowfar_gallery_storage_on_the_command_line(tmp_path, capsys) -> None:
    import json

    from arcface_lab.cli import main

    emb, labels = _faces(200, 40, dim=128, seed=4)
    np.save(tmp_path / "ref.npy", emb)
    np.savetxt(tmp_path / "labels.txt", labels, fmt="%d")
    argv = ["lowfar", "--reference", str(tmp_path / "ref.npy"), "--labels",
            str(tmp_path / "labels.txt"), "--gallery-storage", "float16,int8",
            "--out", str(tmp_path / "l.json")]  # fmt: skip
    assert main(argv) == 0
    got = json.loads((tmp_path / "l.json").read_text())["gallery_storage"]
    assert [r["storage"] for r in got["storages"]] == ["float16", "int8"]
    assert "gallery as int8: 132 bytes a face" in capsys.readouterr().out
    argv[argv.index("float16,int8")] = "float16,zip"
    with pytest.raises(SystemExit):
        main(argv)
    assert "expected a comma-separated list of float16, int8, pq64" in capsys.readouterr().err


def test_ivfpq64_is_judged_by_its_own_search_and_misses_more_with_fewer_lists_visited() -> None:
    """The inverted file's 1:N comes from FAISS's search: visiting every list finds what
    the PQ codes allow, visiting one list of 16 loses mates in the lists not visited."""
    pytest.importorskip("faiss")
    from arcface_lab.measure.storage import Ivf

    emb, labels = _faces(1000, 200, dim=128, spread=2.0, seed=5)
    args = dict(storages=("ivfpq64",), fars=(1e-2,), fpirs=(1e-1,))
    [every] = storage_table(emb, labels, ivf=Ivf(16, 16), **args)["storages"]
    [one] = storage_table(emb, labels, ivf=Ivf(16, 1), **args)["storages"]
    assert every["supported"] and every["bytes_per_face"] == 72  # 64 code bytes + its id
    assert (every["lists"], every["probes"], one["probes"]) == (16, 16, 1)
    assert one["rank1"] < every["rank1"] <= every["rank1_float32"] + 0.02
    assert one["rank1_flips"] > every["rank1_flips"]
    from arcface_lab.report.tables import gallery_storage

    table = gallery_storage(storage_table(emb, labels, ivf=Ivf(16, 1), **args))
    assert table.rows[1][0] == "ivfpq64 (1 of 16 lists searched)"
    [few] = storage_table(emb[:500], labels[:500], ivf=Ivf(16, 4), **args)["storages"]
    assert not few["supported"] and "at least 624 faces" in few["reason"]


def test_ivf_params_are_checked() -> None:
    scale = Params.from_mapping({"scale": {"ivf_lists": 32, "ivf_probes": 8}}).scale
    assert (scale.ivf_lists, scale.ivf_probes) == (32, 8)
    with pytest.raises(ParamsError, match=r"scale.ivf_probes: expected at most ivf_lists \(4\)"):
        Params.from_mapping({"scale": {"ivf_lists": 4, "ivf_probes": 5}}, "p.yaml")
