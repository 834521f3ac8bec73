"""The typed run folder and the tables index.html and the notebooks share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arcface_lab.errors import InputError
from arcface_lab.report import tables
from arcface_lab.report.run_folder import RunFolder


def test_write_is_whole_and_read_names_the_file(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / ".r1.partial")
    folder.path.mkdir()
    assert folder.run_id == "r1"
    folder.write("verdict", {"passed": True})
    assert folder.read("verdict") == {"passed": True}
    assert not list(folder.path.glob(".*partial"))  # no temporary left beside it
    assert folder.read("error", required=False) is None
    with pytest.raises(InputError, match=r"no drift\.json; is this a measured run folder"):
        folder.read("drift")
    folder.file("bench").write_text("{not json")
    with pytest.raises(InputError, match=r"bench\.json: not valid JSON"):
        folder.read("bench")
    with pytest.raises(ValueError, match="'results' is not a run file"):
        folder.file("results")
    with pytest.raises(InputError, match="no such run folder"):
        RunFolder(tmp_path / "nope").read("verdict")


def test_tables_of_an_empty_run_have_no_rows() -> None:
    assert tables.engines({}).rows == [] and tables.latency({}).rows == []
    assert tables.verification({"engines": {}}).rows == []
    assert json.dumps(tables.drift({}, {}).header)


def test_a_failed_check_is_never_rounded_onto_its_target() -> None:
    from arcface_lab.report.html import _one_sentence

    check = {"metric": "bf16 held-out cosine min", "measured": 0.998961, "target": ">= 0.999"}
    assert _one_sentence(check) == "bf16 held-out cosine min: measured 0.99896, target >= 0.999."
    check = {"metric": "speedup", "measured": 3.74931, "target": ">= 4", "note": "openvino/int8"}
    assert _one_sentence(check) == "speedup: measured 3.749, target >= 4 (openvino/int8)."
    check = {"metric": "flips", "measured": 2, "target": "<= 0"}
    assert _one_sentence(check) == "flips: measured 2, target <= 0."


def test_a_copy_has_every_measured_file_and_no_pages(tmp_path: Path) -> None:
    """``render --out`` renders a copy: the scale section and the alignment check go with
    it, the notebooks' status does not (the copy's notebooks have not run)."""
    source = RunFolder(tmp_path / "run")
    source.path.mkdir()
    for name in ("environment", "verdict", "scale", "alignment", "timing", "notebooks"):
        source.write(name, {"name": name})
    (source.path / "index.html").write_text("<html></html>")
    copy = source.copy_to(tmp_path / "copy")
    assert sorted(p.name for p in copy.path.iterdir()) == [
        "alignment.json",
        "environment.json",
        "scale.json",
        "timing.json",
        "verdict.json",
    ]
    assert copy.read("alignment") == {"name": "alignment"}
    with pytest.raises(InputError, match="already exists"):
        source.copy_to(tmp_path / "copy")
