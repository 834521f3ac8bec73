"""The notebooks of a run: executed with papermill, turned into HTML with nbconvert.

Notebooks are thin views over a run folder's JSON (``notebooks/*.ipynb``, each
with a ``parameters`` cell holding ``run_dir`` and ``params_file``). This
module has two halves:

* for the pipeline and ``arcface-lab render``: :func:`execute` runs every
  notebook of a folder against a run folder with papermill, keeps each
  executed notebook under ``<run>/notebooks/`` (papermill's error notebook
  when a cell fails), writes ``<run>/<name>.html`` with nbconvert (code
  hidden) and records what happened in ``<run>/notebooks.json``, which
  :mod:`arcface_lab.report.html` reads to link the pages and flag a failure;
* for the notebooks themselves: :func:`read_run` (the notebook session,
  :func:`arcface_lab.runs.session.open_run`, finds or measures the folder).

papermill, nbconvert and nbformat are imported inside the functions that use
them, so a measurement-only machine (``arcface-lab run --no-render``) needs
none of them. No notebook execution or HTML conversion is written by hand:
papermill and nbconvert do it.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from arcface_lab.core.files import PARTIAL_SUFFIX, write_text_atomic
from arcface_lab.core.version import REPO_ROOT
from arcface_lab.errors import BackendUnavailable, InputError, NotebookError
from arcface_lab.report.run_folder import RunFolder

__all__ = [
    "NotebookStatus",
    "available",
    "default_notebooks_dir",
    "execute",
    "read_run",
    "require",
]

log = logging.getLogger(__name__)

#: Where the executed notebooks go, inside the run folder.
EXECUTED_DIR = "notebooks"
_PACKAGES = ("papermill", "nbconvert", "nbformat", "ipykernel")


@dataclass
class NotebookStatus:
    """One notebook of a run: where its pages are and whether it ran."""

    name: str
    source: str
    ipynb: str  # executed notebook, relative to the run folder
    html: str | None  # HTML page, relative to the run folder; None when not written
    status: str  # "ok" or "failed"
    error: str = ""
    seconds: float = 0.0


def default_notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (beside the package)."""
    return REPO_ROOT / "notebooks"


def available() -> bool:
    """Whether papermill, nbconvert, nbformat and ipykernel are importable here."""
    return all(importlib.util.find_spec(p) is not None for p in _PACKAGES)


def require() -> None:
    """Raise :class:`BackendUnavailable` naming what to install when :func:`available` is false."""
    missing = [p for p in _PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise BackendUnavailable(
            f"rendering notebooks needs {', '.join(missing)}: "
            "pip install 'arcface_lab[notebooks]', or run with --no-render "
            "(JSON and index.html only) and `arcface-lab render RUN_DIR` elsewhere"
        )


def notebook_paths(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The notebooks of ``notebooks_dir`` (default :func:`default_notebooks_dir`), by name."""
    folder = Path(notebooks_dir) if notebooks_dir else default_notebooks_dir()
    paths = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if not paths:
        raise InputError(f"{folder}: no notebooks (*.ipynb) to execute")
    return paths


class _NoAltTextWarning(logging.Filter):
    """nbconvert warns for every plot without alt text; matplotlib outputs never have one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Alternative text is missing")


_nbconvert_log = logging.getLogger(f"{__name__}.nbconvert")
_nbconvert_log.addFilter(_NoAltTextWarning())


def page_nav(run_dir: Path, pages: Sequence[str], current: str) -> str:
    """The bar atop every notebook page: the run, its date, and links to every page."""
    import html as html_lib

    env = RunFolder(run_dir).read("environment", required=False) or {}
    run_id = html_lib.escape(run_dir.name.lstrip(".").removesuffix(PARTIAL_SUFFIX))
    date = html_lib.escape(str(env.get("started_at", "date unknown")))
    links = [("index.html", "index")] + [(f"{p}.html", p) for p in pages]
    links.append(("ACCEPTANCE_MATRIX.md", "acceptance matrix"))
    items = " ".join(
        (
            f"<b>{html_lib.escape(label)}</b>"
            if label == current
            else f'<a href="{html_lib.escape(href)}">{html_lib.escape(label)}</a>'
        )
        for href, label in links
    )
    return (
        '<nav class="arcface-lab" style="font: 14px sans-serif; padding: 8px 16px; '
        'border-bottom: 1px solid #ccc">'
        f"run <code>{run_id}</code>, {date} &nbsp; {items}</nav>"
    )


def _to_html(notebook: Path, html: Path, title: str, nav: str = "") -> None:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    exporter = HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        log=_nbconvert_log,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    if nav:
        start = body.find("<body")
        end = body.find(">", start) + 1
        if start < 0 or end <= 0:
            raise NotebookError(f"{html}: nbconvert wrote no <body> to put the page links in")
        body = body[:end] + nav + body[end:]
    write_text_atomic(html, body)


def _execute_one(
    source: Path,
    run_dir: Path,
    params_file: str,
    timeout_s: float | None,
    pages: Sequence[str] = (),
) -> NotebookStatus:
    import papermill as pm

    out_dir = run_dir / EXECUTED_DIR
    out_dir.mkdir(exist_ok=True)
    executed = out_dir / source.name
    html = run_dir / f"{source.stem}.html"
    status = NotebookStatus(
        source.stem, str(source), f"{EXECUTED_DIR}/{source.name}", html.name, "ok"
    )
    started = time.perf_counter()
    log.info("notebook %s", source.name)
    try:
        pm.execute_notebook(
            source,
            executed,
            parameters={"run_dir": str(run_dir.resolve()), "params_file": params_file},
            cwd=str(source.parent),
            progress_bar=False,
            execution_timeout=timeout_s,
            # ipykernel warns on every start that local TCP is unencrypted: noise here
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except pm.PapermillExecutionError as exc:
        status.status, status.error = "failed", f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # kernel died, no kernelspec, ...: recorded the same way
        status.status, status.error = "failed", f"{type(exc).__name__}: {exc}"
    status.seconds = round(time.perf_counter() - started, 2)
    if not executed.is_file():  # failed before papermill wrote anything
        status.html = None
        return status
    try:
        title = f"{source.stem} ({run_dir.name.lstrip('.')})"
        _to_html(executed, html, title, page_nav(run_dir, pages, source.stem))
    except Exception as exc:
        status.html = None
        if status.status == "ok":
            status.status, status.error = "failed", f"HTML: {type(exc).__name__}: {exc}"
    return status


def execute(
    run_dir: str | Path,
    params_file: str = "",
    notebooks_dir: str | Path | None = None,
    timeout_s: float | None = None,
) -> list[NotebookStatus]:
    """Execute every notebook against ``run_dir`` and write its HTML page there.

    Every notebook is tried, so one failure still leaves the other pages. The
    statuses go to ``run_dir/notebooks.json``; when any notebook failed,
    :class:`NotebookError` is raised after all ran.
    """
    require()
    run_dir = Path(run_dir)
    if not (run_dir / "verdict.json").is_file():
        raise InputError(f"{run_dir}: no verdict.json; notebooks need a measured run folder")
    sources = notebook_paths(notebooks_dir)
    pages = [p.stem for p in sources]
    statuses = [_execute_one(p, run_dir, params_file, timeout_s, pages) for p in sources]
    payload = {"notebooks": [asdict(s) for s in statuses]}
    RunFolder(run_dir).write("notebooks", payload)
    failed = [s for s in statuses if s.status != "ok"]
    if failed:
        what = "; ".join(f"{s.name}: {s.error} (see {s.ipynb})" for s in failed)
        raise NotebookError(f"{len(failed)} notebook(s) failed: {what}", failed)
    return statuses


# -- used inside the notebooks -----------------------------------------------------------


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's JSON files as one dict (:meth:`RunFolder.load`)."""
    return RunFolder(Path(run_dir)).load()
