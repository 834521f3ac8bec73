"""The notebook session: which run folder a notebook shows, measured on demand.

Each notebook's ``parameters`` cell holds ``run_dir`` and ``params_file`` and the
run's overrides (``model``, ``backends``, ``precisions``, ``batch_sizes``, ``data``);
papermill fills ``run_dir`` in a run, a researcher or nbval leaves it empty and
gets a small measurement of ``params_file`` with those overrides, shared by the
notebooks of one Jupyter server. :func:`notebook_run` reads the parameters from the
notebook's namespace and refuses a name the notebook does not take (a papermill
``-p`` typo). :func:`read_run` is re-exported so a notebook needs one import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.version import REPO_ROOT
from arcface_lab.errors import InputError, VerdictFailed
from arcface_lab.report.notebooks import read_run

__all__ = [
    "PARAMETERS",
    "check_verdict",
    "measured_run_folder",
    "notebook_run",
    "open_run",
    "read_run",
    "resolve_path",
]

#: Each override parameter and the params key it sets (a list: comma-separated text).
OVERRIDES = {
    "model": "model.spec",
    "backends": "backends.chain",
    "precisions": "backends.precisions",
    "batch_sizes": "bench.batch_sizes",
    "data": "data.images",
}
#: The parameters every notebook takes (04 adds ``fail_on_verdict``).
PARAMETERS = ("run_dir", "params_file", *OVERRIDES)
_LISTS = ("backends", "precisions", "batch_sizes")
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


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


def notebook_run(namespace: Mapping[str, object], *extra: str) -> Path:
    """The run folder of a notebook's parameters (its ``globals()``), after checking them.

    Every value in ``namespace`` a parameters cell or papermill could have set (not
    private, not a module, class or function) must be one of :data:`PARAMETERS` or
    ``extra``, so a misspelt ``papermill -p`` is an error rather than ignored.

    Raises:
        InputError: an unknown parameter (naming the known ones), a parameter of the
            wrong type, or what :func:`open_run` refuses.
    """
    known = (*PARAMETERS, *extra)
    given = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_")
        and name not in _KERNEL_NAMES
        and not isinstance(value, types.ModuleType)
        and not callable(value)
    }
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InputError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; this notebook takes "
            f"{', '.join(known)}",
            argument=unknown[0],
        )
    texts: dict[str, str] = {}
    for name in PARAMETERS:
        value = given.get(name, "")
        if name in _LISTS and isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InputError(
                f"notebook parameter {name}: expected text, got {value!r}", argument=name
            )
        texts[name] = str(value)
    return open_run(**texts)


def _overrides(values: Mapping[str, str]) -> dict[str, Any]:
    """The params keys the override parameters set, each checked as the notebook gave it."""
    out: dict[str, Any] = {}
    for name, text in values.items():
        text = text.strip()
        if not text:
            continue
        if name == "model" and (text.endswith((".pth", ".onnx")) or "/" in text):
            text = str(resolve_path(text, "model"))  # a file: as params_file resolves
        if name not in _LISTS:
            out[OVERRIDES[name]] = text
            continue
        items = [item.strip() for item in text.split(",")]
        if not all(items):
            raise InputError(
                f"notebook parameter {name}: expected comma-separated names, got {text!r}",
                argument=name,
            )
        if name == "batch_sizes":
            if not all(item.isdigit() and int(item) > 0 for item in items):
                raise InputError(
                    f"notebook parameter batch_sizes: expected comma-separated positive "
                    f"integers (1,8,32), got {text!r}",
                    argument=name,
                )
            out[OVERRIDES[name]] = [int(item) for item in items]
        else:
            out[OVERRIDES[name]] = items
    return out


def measured_run_folder(params_file: str, **chosen: str) -> Path:
    """The folder :func:`open_run` measures ``params_file`` with ``chosen`` overrides into
    (whether or not it was measured yet): named by the file's bytes, the overrides and the
    parent process, so the same inputs share one measurement and others get their own.

    Raises:
        InputError: no such params file, or an override that is not valid.
    """
    path = resolve_path(params_file, "params_file")
    return _measured_run(path, _overrides({k: chosen.get(k, "") for k in OVERRIDES}))[1]


def _measured_run(params_path: Path, overrides: dict[str, Any]) -> tuple[Any, Path]:
    """``params_path`` loaded with ``overrides``, and the folder their run is measured in."""
    from arcface_lab.config.params import load_params

    params = load_params(params_path, overrides)
    inputs = params_path.read_bytes() + json.dumps(overrides, sort_keys=True).encode()
    digest = hashlib.sha256(inputs).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / "arcface_lab-notebook-runs"
    root.mkdir(exist_ok=True)
    return params, root / f"{params.name}-{digest}-{os.getppid()}"


def open_run(
    run_dir: str = "",
    params_file: str = "",
    *,
    model: str = "",
    backends: str = "",
    precisions: str = "",
    batch_sizes: str = "",
    data: str = "",
) -> Path:
    """The run folder a notebook shows.

    ``run_dir`` when given. Empty (a notebook opened on its own, or nbval):
    ``params_file``, with the keys ``model``, ``backends`` (a comma-separated
    chain), ``precisions``, ``batch_sizes`` and ``data`` (validation faces) set
    where given, is measured with :func:`arcface_lab.runs.pipeline.run` (JSON only,
    no notebooks) into a temporary folder named by those inputs, once per parent
    process: the notebooks of one Jupyter server or one nbval session share a single
    measurement, and one waits for another measuring the same inputs.

    Raises:
        InputError: no such run folder or params file, an override given with a
            ``run_dir`` (it is already measured), or an override that is not valid.
    """
    overrides = _overrides(
        {
            "model": model,
            "backends": backends,
            "precisions": precisions,
            "batch_sizes": batch_sizes,
            "data": data,
        }
    )
    if run_dir and overrides:
        names = [name for name, key in OVERRIDES.items() if key in overrides]
        raise InputError(
            f"{', '.join(names)}: set only with run_dir empty (run_dir {run_dir!r} is "
            "already measured; clear run_dir to measure params_file with them)",
            argument=names[0],
        )
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

    from arcface_lab.runs.pipeline import run

    params_path = resolve_path(params_file, "params_file")
    params, out = _measured_run(params_path, overrides)
    with FileLock(str(out) + ".lock"):
        if not (out / "verdict.json").is_file():
            print(f"run_dir is empty: measuring {params_path} into {out} (about a minute)")
            run(params, out_dir=out, render=False)
    return out
