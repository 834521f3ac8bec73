"""Committed reference runs: published whole from a rendered run; every committed one opens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from arcface_lab.errors import InputError
from arcface_lab.runs import reference
from tests.test_pipeline import _Page

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in (ROOT / "reports" / "reference").glob("*") if p.is_dir())


def _links_resolve(run_dir: Path) -> list[str]:
    page = (run_dir / "index.html").read_text()
    parsed = _Page()
    parsed.feed(page)
    for link in parsed.links:
        if link.startswith("#"):
            assert f"id='{link[1:]}'" in page, (run_dir, link)
        elif "://" not in link:
            assert (run_dir / link).is_file(), (run_dir, link)
    return parsed.links


@pytest.mark.slow
def test_publish_copies_a_rendered_run_whole_and_replaces_it(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from arcface_lab.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    params = tmp_path / "small.yaml"
    text = (ROOT / "params" / "ci.yaml").read_text().replace("name: ci", "name: small")
    params.write_text(
        text.replace("[fp32, fp16]", "[fp32]").replace("[onnxruntime, torch]", "[torch]")
    )
    assert main(["run", str(params), "--out", str(tmp_path / "run")]) == 0
    root = tmp_path / "reference"
    dest = reference.publish(tmp_path / "run", root)
    env = json.loads((dest / "environment.json").read_text())
    infix = "-capped" if env["hardware"]["cpu"].get("isa_cap") else ""
    assert dest == root / f"{env['hardware_class']}{infix}-small"
    assert not list(dest.glob("notebooks/*.ipynb"))  # their HTML pages are beside them
    assert {"01_build_engines.html", "ACCEPTANCE_MATRIX.md"} <= set(_links_resolve(dest))
    (dest / "stray.txt").write_text("from an older copy")
    assert reference.publish(tmp_path / "run", root) == dest
    assert not (dest / "stray.txt").exists() and not list(root.glob(".*"))
    assert reference.main([str(root), str(tmp_path / "run")]) == 0
    matrix = (root / "ACCEPTANCE_MATRIX.md").read_text().splitlines()
    assert len(matrix) == 5 and matrix[-1].startswith(f"| {dest.name} | ")

    monkeypatch.setattr(reference, "MAX_BYTES", 1000)
    with pytest.raises(InputError, match=r"MiB to commit; expected at most 0 MiB"):
        reference.publish(tmp_path / "run", root)
    assert (dest / "index.html").is_file()  # the old copy is kept whole
    bare = tmp_path / "bare"
    shutil.copytree(tmp_path / "run", bare)
    (bare / "notebooks.json").unlink()
    with pytest.raises(InputError, match=r"bare: not rendered \(no notebooks.json\)"):
        reference.publish(bare, root)
    (bare / "verdict.json").unlink()
    with pytest.raises(InputError, match=r"bare: not a complete run"):
        reference.publish(bare, root)
    assert reference.main([str(root), "--reports", str(tmp_path / "none")]) == 2


def test_a_capped_run_is_never_named_as_its_class(tmp_path: Path) -> None:
    env = {"hardware_class": "cpu-avx2", "params": {"name": "default"}}
    env["hardware"] = {"cpu": {"isa_cap": "AVX2", "generation": "Zen 5"}}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    assert reference.reference_name(tmp_path) == "cpu-avx2-capped-default"
    env["hardware"] = {"cpu": {"isa_cap": "", "generation": "Zen 3"}}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    assert reference.reference_name(tmp_path) == "cpu-avx2-default"


@pytest.mark.parametrize("run_dir", COMMITTED, ids=[p.name for p in COMMITTED])
def test_each_committed_reference_run_opens_without_running_anything(run_dir: Path) -> None:
    """Its pages are there, its links resolve, and it says what machine measured it."""
    env = json.loads((run_dir / "environment.json").read_text())
    capped = env["hardware"]["cpu"].get("isa_cap")
    infix = "-capped" if capped else ""
    assert run_dir.name == f"{env['hardware_class']}{infix}-{env['params']['name']}"
    assert json.loads((run_dir / "verdict.json").read_text())["checks"]
    links = _links_resolve(run_dir)
    assert {f"{n}.html" for n in ("01_build_engines", "04_acceptance_report")} <= set(links)
    size = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    assert size <= reference.MAX_BYTES


def test_the_committed_matrix_has_a_row_per_committed_run() -> None:
    if not COMMITTED:
        pytest.skip("no reference run is committed yet")
    rows = (ROOT / "reports" / "reference" / "ACCEPTANCE_MATRIX.md").read_text().splitlines()[4:]
    assert sorted(r.split(" | ")[0].lstrip("| ") for r in rows) == [p.name for p in COMMITTED]
