"""Reference runs committed under ``reports/reference/``: a report to open before installing.

``make reference`` runs ``make report`` and then :func:`publish` copies each rendered
run into ``reports/reference/<hardware class>-<params name>/`` (replacing that class's
previous copy whole, never in place), without the executed ``.ipynb`` files whose HTML
pages are beside them, and rewrites ``reports/reference/ACCEPTANCE_MATRIX.md`` over
every committed run. A reviewer opens ``reports/reference/<class>-default/index.html``.

    python -m arcface_lab.runs.reference reports/reference RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from arcface_lab.core.files import fsync_dir, partial_name
from arcface_lab.errors import ArcfaceLabError, InputError
from arcface_lab.report.matrix import write_matrix
from arcface_lab.report.run_folder import RunFolder

__all__ = ["MAX_BYTES", "latest_runs", "main", "publish", "reference_name"]

#: A committed run must stay small: a reviewer's clone, not an archive.
MAX_BYTES = 4 * 1024 * 1024


def reference_name(run_dir: Path) -> str:
    """``<hardware class>-<params name>``, e.g. ``cpu-amx-default``.

    A run whose kernels were capped (``ONEDNN_MAX_CPU_ISA``) is ``<class>-capped-<name>``,
    so it never stands in for a machine of that class.
    """
    run = RunFolder(run_dir)
    env = run.read("environment")
    cls = env.get("hardware_class")
    name = (env.get("params") or {}).get("name")
    if not cls or not name:
        raise InputError(
            f"{run_dir}: environment.json names no host class or params name; expected a "
            "run folder measured by this version",
            argument="run_dir",
        )
    capped = ((env.get("hardware") or {}).get("cpu") or {}).get("isa_cap")
    return f"{cls}-capped-{name}" if capped else f"{cls}-{name}"


def _files(run_dir: Path) -> list[Path]:
    """What is copied: everything but executed notebooks that have their HTML page."""
    out = []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or path.name.endswith(".lock"):
            continue
        rel = path.relative_to(run_dir)
        if rel.parts[0] == "notebooks" and (run_dir / f"{path.stem}.html").is_file():
            continue
        out.append(rel)
    return out


def publish(run_dir: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Copy the rendered run ``run_dir`` to ``root/<class>-<name>``, replacing it whole.

    Raises:
        InputError: ``run_dir`` is not a complete, rendered run (no verdict or notebooks,
            or it failed), or the copy would exceed :data:`MAX_BYTES`.
    """
    run_dir, root = Path(run_dir), Path(root)
    folder = RunFolder(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder", argument="run_dir")
    if folder.file("error").is_file() or not folder.file("verdict").is_file():
        raise InputError(
            f"{run_dir}: not a complete run (no verdict.json, or error.json); expected a "
            "finished run of make report",
            argument="run_dir",
        )
    if not folder.rendered:
        raise InputError(
            f"{run_dir}: not rendered (no notebooks.json); expected a run of make report, "
            "not --no-render",
            argument="run_dir",
        )
    files = _files(run_dir)
    size = sum((run_dir / rel).stat().st_size for rel in files)
    if size > MAX_BYTES:
        raise InputError(
            f"{run_dir}: {size / 2**20:.1f} MiB to commit; expected at most "
            f"{MAX_BYTES / 2**20:.0f} MiB for a reference run",
            argument="run_dir",
        )
    dest = root / reference_name(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    stage = partial_name(dest)
    try:
        for rel in files:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / rel, stage / rel)
        old = partial_name(dest, ".old") if dest.exists() else None
        if old is not None:
            dest.rename(old)
        stage.rename(dest)
        fsync_dir(root)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return dest


def latest_runs(reports: Path, names: Sequence[str]) -> list[Path]:
    """The newest complete rendered run of each params name in ``reports`` (by run id)."""
    found = []
    for name in names:
        runs = sorted(
            p
            for p in reports.glob(f"*-{name}")
            if p.is_dir() and RunFolder(p).rendered and RunFolder(p).file("verdict").is_file()
        )
        if not runs:
            raise InputError(
                f"{reports}: no rendered run of params {name!r}; run make report first",
                argument="reports",
            )
        found.append(runs[-1])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arcface_lab.runs.reference", description=__doc__.splitlines()[0]
    )
    parser.add_argument("root", type=Path, help="reports/reference")
    parser.add_argument("runs", type=Path, nargs="*", help="run folders (default: the newest)")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument(
        "--names", default="default,real_faces", help="params names, for the newest runs"
    )
    args = parser.parse_args(argv)
    try:
        runs = args.runs or latest_runs(args.reports, args.names.split(","))
        for run in runs:
            print(f"published {run} as {publish(run, args.root)}")
        committed = sorted(p for p in args.root.iterdir() if (p / "verdict.json").is_file())
        print(f"wrote {write_matrix(committed, args.root / 'ACCEPTANCE_MATRIX.md')}")
    except ArcfaceLabError as exc:
        print(f"reference: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
