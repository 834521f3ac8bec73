"""The layer contract of docs/architecture.md holds, and breaks on a planted violation.

``make lint`` runs ``lint-imports`` on the package; these tests run it on a copy with
one bad import planted, so a contract that was weakened or deleted fails here.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import arcface_lab
from arcface_lab._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_copy(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over a copy of the package with ``line`` appended to ``module``."""
    shutil.copytree(ROOT / "arcface_lab", tmp_path / "arcface_lab")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "arcface_lab" / module
    target.write_text((target.read_text() if target.exists() else "") + f"\n{line}\n")
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_contracts(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, "errors.py", "")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken", "says"),
    [
        (
            "core/host.py",
            "from arcface_lab.measure import optimize",
            "wings: each imports only the wings below it",
            "arcface_lab.core is not allowed to import arcface_lab.measure",
        ),
        (
            "config/params.py",
            "from arcface_lab.engines.registry import list_backends",
            "wings: each imports only the wings below it",
            "arcface_lab.config is not allowed to import arcface_lab.engines",
        ),
        (
            "engines/base.py",
            "from arcface_lab.engines import openvino",
            "no cycles",
            ".base -> .openvino",
        ),
        (
            "runs/pipeline.py",
            "from arcface_lab.params import load_params",
            "the old module names are for users only",
            "arcface_lab.runs.pipeline -> arcface_lab.params",
        ),
        (
            "helpers.py",
            "import os",
            "every module sits in a wing",
            "arcface_lab.helpers",
        ),
    ],
)
def test_a_planted_violation_breaks_the_contract(
    tmp_path: Path, module: str, line: str, broken: str, says: str
) -> None:
    result = _lint_copy(tmp_path, module, line)
    assert result.returncode == 1, result.stdout + result.stderr
    report = result.stdout.split("Broken contracts", 1)[-1]
    assert broken in report and says in report, result.stdout


def test_public_names_are_at_the_top() -> None:
    for name in arcface_lab.__all__:
        assert getattr(arcface_lab, name) is not None, name


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_names_still_import_and_say_where_they_went(old: str) -> None:
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(MOVED[old] in str(w.message) for w in caught), [str(w.message) for w in caught]
    new = importlib.import_module(MOVED[old])
    for name in new.__all__:
        assert getattr(module, name) is getattr(new, name), f"{old}.{name}"


def test_perf_runs_as_a_module_under_its_old_name() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arcface_lab.perf", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--engines" in result.stdout
