"""Notebooks of a run: executed with papermill, HTML with nbconvert, linked from index.html.

One real ``arcface-lab run params/ci.yaml`` (module fixture) is shared by the
tests; the failure and ``--no-render`` tests reuse its measurement through a
stand-in ``_measure`` so only the rendering is exercised again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arcface_lab.cli import main
from arcface_lab.errors import InputError
from arcface_lab.measure.acceptance import Check
from arcface_lab.report import tables
from arcface_lab.report.notebooks import read_run
from arcface_lab.report.run_folder import MEASURED, RunFolder
from arcface_lab.runs import pipeline
from arcface_lab.runs.session import (
    PARAMETERS,
    check_verdict,
    measured_run_folder,
    notebook_run,
    open_run,
    resolve_path,
)

ROOT = Path(__file__).resolve().parents[1]
CI_PARAMS = str(ROOT / "params" / "ci.yaml")
DATA = Path(__file__).resolve().parent / "data"
NOTEBOOKS = ("01_build_engines", "02_embedding_drift", "03_benchmark", "04_acceptance_report")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[int, Path]:
    """``arcface-lab run params/ci.yaml``: exit status and run folder."""
    root = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache_dir))
        code = main(["run", CI_PARAMS, "--reports-root", str(root)])
    runs = list(root.iterdir())
    assert len(runs) == 1, runs
    return code, runs[0]


@pytest.fixture
def replay(ci_run: tuple[int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``pipeline._measure`` replaced by a copy of the fixture run's measurement."""
    source = ci_run[1]

    def fake_measure(params: object, folder: RunFolder) -> pipeline.RunResult:
        for name in MEASURED:
            shutil.copy(source / f"{name}.json", folder.file(name))
        verdict = json.loads((source / "verdict.json").read_text())
        return pipeline.RunResult(folder.path, [Check.from_dict(c) for c in verdict["checks"]])

    monkeypatch.setattr(pipeline, "_measure", fake_measure)


def test_run_executes_and_links_the_four_notebooks(ci_run: tuple[int, Path]) -> None:
    code, run_dir = ci_run
    assert code == 0
    index = (run_dir / "index.html").read_text()
    assert "Verdict" in index and "Acceptance-matrix row" in index
    for name in NOTEBOOKS:
        assert (run_dir / "notebooks" / f"{name}.ipynb").is_file()
        assert f'href="{name}.html"' in index
        page = (run_dir / f"{name}.html").read_text()
        assert "Traceback" not in page and "read_run(" not in page  # ran, and code is hidden
        # every page: the run, its date, and links to the index and to the other pages
        nav = page[page.index('<nav class="arcface-lab"') : page.index("</nav>")]
        started = json.loads((run_dir / "environment.json").read_text())["started_at"]
        assert f"run <code>{run_dir.name}</code>, {started}" in nav
        assert 'href="index.html"' in nav and f"<b>{name}</b>" in nav
        others = [n for n in NOTEBOOKS if n != name]
        assert all(f'href="{n}.html"' in nav for n in others) and f'href="{name}.html"' not in nav
        assert page.index("<nav") < page.index("<main")  # atop the page, before the cells
    status = json.loads((run_dir / "notebooks.json").read_text())["notebooks"]
    assert [(s["name"], s["status"]) for s in status] == [(n, "ok") for n in NOTEBOOKS]
    # plots embedded: cosine histogram, pair-score scatter + ROC; latency, speedup
    assert (run_dir / "02_embedding_drift.html").read_text().count("<img") >= 2
    assert (run_dir / "03_benchmark.html").read_text().count("<img") >= 2
    assert "peak memory " in (run_dir / "04_acceptance_report.html").read_text()
    executed = json.loads((run_dir / "notebooks" / "04_acceptance_report.ipynb").read_text())
    checked = [c for c in executed["cells"] if "# NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert "verdict: PASS" in "".join(checked[0]["outputs"][0]["text"])
    # per-pair scores for the scatter and ROC plots
    ver = json.loads((run_dir / "verification.json").read_text())
    for engine in ver["engines"].values():
        n = ver["pairs"]
        assert len(engine["reference_scores"]) == len(engine["engine_scores"]) == n
        assert len(engine["same"]) == n and set(engine["same"]) == {True, False}


def test_render_from_json_alone(
    ci_run: tuple[int, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copied-run"
    copy.mkdir()
    for name in MEASURED:
        shutil.copy(ci_run[1] / f"{name}.json", copy)
    assert main(["render", str(copy)]) == 0
    index = (copy / "index.html").read_text()
    for name in NOTEBOOKS:
        assert (copy / f"{name}.html").is_file() and f'href="{name}.html"' in index

    # a rendered run is never rewritten in place, not even by broken notebooks
    pages = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["render", str(copy), "--notebooks-dir", str(DATA)]) == 2
    assert "already rendered (notebooks.json); render never rewrites" in capsys.readouterr().err
    beside = tmp_path / "beside"
    assert main(["render", str(copy), "--notebooks-dir", str(DATA), "--out", str(beside)]) == 1
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == pages
    assert "Notebook FAILED: broken_notebook" in (beside / "index.html").read_text()
    assert main(["render", str(copy), "--out", str(beside)]) == 2  # never overwritten either

    bare = tmp_path / "index-only"
    shutil.copytree(copy, bare, ignore=shutil.ignore_patterns("*.html", "notebooks*"))
    assert main(["render", str(bare), "--no-notebooks"]) == 0
    assert [p.name for p in bare.glob("*.html")] == ["index.html"]
    assert "Not rendered for this run" in (bare / "index.html").read_text()


def test_failing_notebook_fails_the_run(
    replay: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r1"
    code = main(["run", CI_PARAMS, "--out", str(out), "--notebooks-dir", str(DATA)])
    assert code == 1
    assert (
        "broken_notebook: RuntimeError: this notebook fails on purpose" in capsys.readouterr().err
    )
    failed = tmp_path / "r1.failed"
    assert failed.is_dir() and not out.exists() and not list(tmp_path.glob(".*partial"))
    # papermill's error notebook is kept, with the failing cell's error in it
    executed = json.loads((failed / "notebooks" / "broken_notebook.ipynb").read_text())
    errors = [
        o["ename"]
        for c in executed["cells"]
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]
    assert errors == ["RuntimeError"]
    assert "NotebookError" in json.loads((failed / "error.json").read_text())["error"]
    index = (failed / "index.html").read_text()
    assert "The run FAILED" in index and "Notebook FAILED: broken_notebook" in index
    assert 'href="notebooks/broken_notebook.ipynb"' in index
    assert 'href="broken_notebook.html"' in index  # the error notebook as a page too

    # a second failure under the same name keeps the first one
    assert main(["run", CI_PARAMS, "--out", str(out), "--notebooks-dir", str(DATA)]) == 1
    assert len(list(tmp_path.glob("r1.failed*"))) == 2


def test_no_render_needs_no_notebook_packages(
    replay: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for name in ("papermill", "nbconvert", "nbformat"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, find_spec says missing
    assert main(["run", CI_PARAMS, "--out", str(tmp_path / "r2"), "--no-render"]) == 0
    r2 = tmp_path / "r2"
    assert [p.name for p in r2.glob("*.html")] == ["index.html"]
    assert "Not rendered for this run (<code>--no-render</code>)" in (r2 / "index.html").read_text()

    # without --no-render it says what is missing before measuring anything
    capsys.readouterr()
    assert main(["run", CI_PARAMS, "--out", str(tmp_path / "r3")]) == 1
    err = capsys.readouterr().err
    assert "papermill" in err and "--no-render" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r2"]

    # render falls back to index.html only
    assert main(["render", str(r2)]) == 0
    assert "index.html only" in capsys.readouterr().err


def test_measurement_modules_import_no_notebook_packages() -> None:
    code = (
        "import sys\n"
        "import arcface_lab.cli, arcface_lab.report.notebooks, arcface_lab.runs.pipeline, arcface_lab.report.html\n"
        "heavy = {'papermill', 'nbconvert', 'nbformat', 'pandas', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_notebook_helpers(ci_run: tuple[int, Path], tmp_path: Path) -> None:
    run_dir = ci_run[1]
    assert open_run(str(run_dir), "ignored.yaml") == run_dir
    run = read_run(run_dir)
    assert run["run_id"] == run_dir.name and run["verdict"]["passed"]
    with pytest.raises(InputError, match="run_dir and params_file are both empty"):
        open_run("", "")
    with pytest.raises(InputError, match="no such run folder"):
        open_run(str(tmp_path / "nope"))
    with pytest.raises(InputError, match=r"no environment\.json; is this a measured run folder"):
        read_run(tmp_path)


def test_committed_notebooks_are_stripped_and_parameterized() -> None:
    for name in NOTEBOOKS:
        nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1 and 'params_file = "params/ci.yaml"' in "".join(params[0]["source"])
        names = [line.split(" = ")[0] for line in "".join(params[0]["source"]).splitlines()]
        own = ("fail_on_verdict",) if name.startswith("04") else ()
        assert [n for n in names if not n.startswith("#")] == [*PARAMETERS, *own], name
        for cell in code:
            if "# NBVAL_CHECK_OUTPUT" not in "".join(cell["source"]):
                assert cell["outputs"] == [], (name, cell["source"])
        assert "matplotlib.use" not in json.dumps(nb)


def test_every_table_of_a_real_run(ci_run: tuple[int, Path]) -> None:
    """The tables index.html and the notebooks show, from the run's own files."""
    run = RunFolder(ci_run[1]).load()
    assert set(MEASURED) <= set(run)
    cands = tables.candidates(run["optimize"])
    assert len(cands.rows) == len(run["optimize"]["candidates"])
    assert all(len(r) == len(cands.header) for r in cands.rows)
    checks = tables.checks(run["verdict"])
    assert [r[0] for r in checks.rows] == [c["metric"] for c in run["verdict"]["checks"]]
    lat = tables.latency(run["bench"])
    refs = [r[0] for r in lat.rows if r[0].startswith("reference ")]
    assert refs and len(refs) == sum(1 for r in run["bench"]["records"] if r["reference"])
    thresholds = run["environment"]["params"]["thresholds"]
    drift = tables.drift(run["drift"], thresholds)
    assert {r[0] for r in drift.rows} == set(run["drift"]["engines"])
    assert all(r[3] == pytest.approx(1 - r[2]) for r in drift.rows)
    ver = tables.verification(run["verification"])
    assert {r[0] for r in ver.rows} == set(run["verification"]["engines"])
    env = dict(tables.environment(run["environment"]).rows)
    assert env["model sha256"] == run["environment"]["model"]["sha256"]
    assert list(tables.engines(run["drift"]).frame("engine").index) == list(run["drift"]["engines"])


def test_relative_paths_resolve_against_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From anywhere: the repository root, then its notebooks/ (JupyterLab's folder)."""
    monkeypatch.chdir(tmp_path)
    assert resolve_path("params/ci.yaml", "params_file") == ROOT / "params" / "ci.yaml"
    assert resolve_path("../params/ci.yaml", "params_file") == ROOT / "params" / "ci.yaml"
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text("name: mine\n")
    assert resolve_path("params/ci.yaml", "params_file") == tmp_path / "params" / "ci.yaml"
    with pytest.raises(InputError) as err:
        resolve_path("params/nope.yaml", "params_file")
    message = str(err.value)
    assert message.startswith("params_file 'params/nope.yaml': not found relative to ")
    assert str(tmp_path) in message and str(ROOT / "notebooks") in message
    assert err.value.argument == "params_file"


def test_check_verdict_raises_only_when_asked() -> None:
    from arcface_lab.errors import VerdictFailed

    failing = {
        "passed": False,
        "checks": [
            {"metric": "fp16 cosine min", "status": "FAIL", "measured": 0.99, "target": ">= 0.999"}
        ],
    }
    assert check_verdict(failing, False) == "verdict: FAIL (fp16 cosine min: 0.99 vs >= 0.999)"
    with pytest.raises(VerdictFailed, match="fp16 cosine min"):
        check_verdict(failing, True)
    assert check_verdict({"passed": True, "checks": []}, True) == "verdict: PASS"


def _papermill(
    run_dir: Path, out: Path, cwd: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """The README's papermill recipe (the notebook path relative to ``cwd``)."""
    notebook = Path("notebooks/04_acceptance_report.ipynb")
    if cwd != ROOT:
        notebook = ROOT / notebook
    return subprocess.run(
        [sys.executable, "-m", "papermill", str(notebook), str(out), "-p", "run_dir",
         str(run_dir), *extra],
        cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_papermill_recipe_exits_non_zero_on_fail_with_fail_on_verdict(
    ci_run: tuple[int, Path], tmp_path: Path
) -> None:
    """From the repository root and from outside it, on a PASS and on a FAIL run folder."""
    passing = ci_run[1]
    failing = tmp_path / "failing"
    shutil.copytree(passing, failing)
    verdict = json.loads((failing / "verdict.json").read_text())
    verdict["passed"] = False  # the same run judged FAIL: what the notebook does with it
    verdict["checks"][0]["status"] = "FAIL"
    (failing / "verdict.json").write_text(json.dumps(verdict))
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    flag = ("-p", "fail_on_verdict", "True")
    done = _papermill(passing, tmp_path / "p.ipynb", ROOT, *flag)
    assert done.returncode == 0, done.stderr[-2000:]
    done = _papermill(failing, tmp_path / "f.ipynb", ROOT, *flag)
    assert done.returncode != 0 and "VerdictFailed: verdict: FAIL" in done.stderr
    done = _papermill(failing, outside / "f.ipynb", outside)  # interactive default: no raise
    assert done.returncode == 0, done.stderr[-2000:]
    done = _papermill(failing, outside / "f2.ipynb", outside, *flag)
    assert done.returncode != 0 and "VerdictFailed" in done.stderr
    done = _papermill(passing, outside / "u.ipynb", outside, "-p", "fail_on_verdit", "True")
    assert done.returncode != 0 and "unknown notebook parameter(s) fail_on_verdit" in done.stderr
    # a run folder that is not there: one clear error naming the folders tried
    done = _papermill(Path("reports/none"), outside / "n.ipynb", outside)
    assert done.returncode != 0 and "not found relative to" in done.stderr
    assert done.stderr.count("NameError") == 0


def test_notebook_parameters_are_checked_and_unknown_ones_named(ci_run: tuple[int, Path]) -> None:
    """A misspelt ``papermill -p`` is an error naming the known parameters, not ignored."""
    import math

    run_dir = str(ci_run[1])
    cell = {"run_dir": run_dir, "params_file": "params/ci.yaml", "math": math, "In": []}
    assert notebook_run({**cell, "_i1": "x", "pd": len}) == ci_run[1]
    with pytest.raises(InputError) as err:
        notebook_run({**cell, "modle": "seeded:r50"})
    assert str(err.value) == (
        "unknown notebook parameter(s) modle; this notebook takes run_dir, params_file, "
        "model, backends, precisions, batch_sizes, data"
    )
    assert err.value.argument == "modle"
    with pytest.raises(InputError, match=r"fail_on_verdict; this notebook takes run_dir"):
        notebook_run({**cell, "fail_on_verdict": True})
    assert notebook_run({**cell, "fail_on_verdict": True}, "fail_on_verdict") == ci_run[1]
    with pytest.raises(InputError, match=r"^model, precisions: set only with run_dir empty"):
        notebook_run({**cell, "model": "seeded:r18", "precisions": "fp32"})
    with pytest.raises(InputError, match=r"batch_sizes: expected comma-separated positive"):
        notebook_run({**cell, "run_dir": "", "batch_sizes": "1,x"})
    with pytest.raises(InputError, match=r"notebook parameter run_dir: expected text, got 3.5"):
        notebook_run({**cell, "run_dir": 3.5})
    with pytest.raises(InputError, match=r"model 'models/none.pth': not found relative to"):
        notebook_run({**cell, "run_dir": "", "model": "models/none.pth"})


def test_overrides_are_measured_once_and_shared(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """model, backends, precisions, batch_sizes and data set what is measured; a second
    notebook with the same inputs reuses the measurement; a bad value names the file."""
    from arcface_lab.errors import ParamsError

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    chosen = {
        "model": "seeded:r18",
        "backends": "onnxruntime",
        "precisions": "fp32",
        "batch_sizes": "2",
        "data": "synthetic:8",
    }
    first = open_run("", "params/ci.yaml", **chosen)
    params = json.loads((first / "environment.json").read_text())["params"]
    assert params["backends"]["chain"] == ["onnxruntime"]
    assert params["backends"]["precisions"] == ["fp32"]
    assert params["bench"]["batch_sizes"] == [2] and params["data"]["images"] == "synthetic:8"
    assert "measuring" in capsys.readouterr().out
    assert open_run("", "params/ci.yaml", **chosen) == first  # shared: not measured twice
    assert "measuring" not in capsys.readouterr().out
    # other inputs, another folder (where open_run would measure them; not measured here)
    assert measured_run_folder("params/ci.yaml", **chosen) == first
    other = measured_run_folder("params/ci.yaml", **{**chosen, "batch_sizes": "1"})
    assert other != first and other.parent == first.parent
    with pytest.raises(ParamsError) as err:
        open_run("", "params/ci.yaml", precisions="fp33")
    assert str(err.value).startswith(
        f"{ROOT / 'params' / 'ci.yaml'} (with backends.precisions overridden): "
        "backends.precisions: expected one of fp32"
    )
