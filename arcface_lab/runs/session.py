"""The notebook session: which run folder a notebook shows, measured on demand.

Each notebook's ``parameters`` cell holds ``run_dir`` and ``params_file``;
papermill fills ``run_dir`` in a run, a researcher or nbval leaves it empty and
gets a small measurement of ``params_file``. :func:`read_run` is re-exported so a
notebook needs one import.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from arcface_lab.errors import InputError, VerdictFailed
from arcface_lab.report.notebooks import read_run

__all__ = ["check_verdict", "open_run", "read_run", "resolve_path"]

#: The repository this package runs from: relative notebook paths resolve against it too.
REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(text: str, argument: str) -> Path:
    """``text`` as given, else against the repository root, else its ``notebooks/``.

    A notebook runs with its own folder as the working directory in JupyterLab and with
    the caller's under papermill; the same relative path (``params/ci.yaml``, or the older
    ``../params/ci.yaml``) works from either.

    Raises:
        InputError: none of those exists; the message names every folder tried.
    """
    path = Path(text).expanduser()
    if path.is_absolute():
        if path.exists():
            return path
        raise InputError(f"{argument} {text!r}: no such file or folder", argument=argument)
    tried = [Path.cwd(), REPO_ROOT, REPO_ROOT / "notebooks"]
    for base in tried:
        if (base / path).exists():
            return (base / path).resolve()
    where = ", ".join(str(b) for b in dict.fromkeys(tried))
    raise InputError(f"{argument} {text!r}: not found relative to {where}", argument=argument)


def check_verdict(verdict: dict[str, object], fail_on_verdict: bool) -> str:
    """The verdict line; with ``fail_on_verdict`` a FAIL raises, so papermill exits non-zero.

    Raises:
        VerdictFailed: ``fail_on_verdict`` and the run's verdict is FAIL (naming each failed
            check).
    """
    checks = verdict.get("checks")
    listed = checks if isinstance(checks, list) else []
    failed = [c for c in listed if isinstance(c, dict) and c.get("status") == "FAIL"]
    line = "verdict: PASS" if verdict.get("passed") else "verdict: FAIL"
    if failed:
        line += (
            " ("
            + "; ".join(f"{c['metric']}: {c.get('measured')} vs {c['target']}" for c in failed)
            + ")"
        )
    if fail_on_verdict and not verdict.get("passed"):
        raise VerdictFailed(line)
    return line


def open_run(run_dir: str = "", params_file: str = "") -> Path:
    """The run folder a notebook shows.

    ``run_dir`` when given. Empty (a notebook opened on its own, or nbval):
    ``params_file`` is measured with :func:`arcface_lab.runs.pipeline.run` (JSON
    only, no notebooks) into a temporary folder, once per parent process, so
    the notebooks of one Jupyter server or one nbval session share a single
    measurement.
    """
    if run_dir:
        try:
            path = resolve_path(run_dir, "run_dir")
        except InputError as exc:
            raise InputError(f"{exc} (no such run folder)", argument="run_dir") from None
        if not path.is_dir():
            raise InputError(f"run_dir {run_dir!r}: no such run folder", argument="run_dir")
        return path
    if not params_file:
        raise InputError("run_dir and params_file are both empty: give one of them")
    from filelock import FileLock

    from arcface_lab.config.params import load_params
    from arcface_lab.runs.pipeline import run

    params_path = resolve_path(params_file, "params_file")
    params = load_params(params_path)
    digest = hashlib.sha256(params_path.read_bytes()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "arcface_lab-notebook-runs"
    root.mkdir(exist_ok=True)
    out = root / f"{params.name}-{digest}-{os.getppid()}"
    with FileLock(str(out) + ".lock"):
        if not (out / "verdict.json").is_file():
            print(f"run_dir is empty: measuring {params_path} into {out} (about a minute)")
            run(params, out_dir=out, render=False)
    return out
