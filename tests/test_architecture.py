"""The layer contract of docs/architecture.md holds, and breaks on a planted violation.

``make lint`` runs ``lint-imports`` on the package; these tests run it on a copy with
one bad import planted, so a contract that was weakened or deleted fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import arcface_lab

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
    assert "2 kept, 0 broken" in result.stdout


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


def test_make_bench_runs_the_perf_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arcface_lab.runs.perf", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--engines" in result.stdout
