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

from arcface_lab.errors import InputError
from arcface_lab.report.notebooks import read_run

__all__ = ["open_run", "read_run"]


def open_run(run_dir: str = "", params_file: str = "") -> Path:
    """The run folder a notebook shows.

    ``run_dir`` when given. Empty (a notebook opened on its own, or nbval):
    ``params_file`` is measured with :func:`arcface_lab.runs.pipeline.run` (JSON
    only, no notebooks) into a temporary folder, once per parent process, so
    the notebooks of one Jupyter server or one nbval session share a single
    measurement.
    """
    if run_dir:
        path = Path(run_dir)
        if not path.is_dir():
            raise InputError(f"run_dir {run_dir!r}: no such run folder")
        return path
    if not params_file:
        raise InputError("run_dir and params_file are both empty: give one of them")
    from filelock import FileLock

    from arcface_lab.config.params import load_params
    from arcface_lab.runs.pipeline import run

    params = load_params(params_file)
    digest = hashlib.sha256(Path(params_file).read_bytes()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "arcface_lab-notebook-runs"
    root.mkdir(exist_ok=True)
    out = root / f"{params.name}-{digest}-{os.getppid()}"
    with FileLock(str(out) + ".lock"):
        if not (out / "verdict.json").is_file():
            print(f"run_dir is empty: measuring {params_file} into {out} (about a minute)")
            run(params, out_dir=out, render=False)
    return out
