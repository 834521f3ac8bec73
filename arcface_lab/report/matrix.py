"""The acceptance matrix: one row per run, each seed metric with its target and what was measured.

The seed's promotion checklist keeps a table of runs (``ACCEPTANCE_MATRIX.md``). Every run
folder gets its own one-row matrix when its ``index.html`` is rendered, and
``arcface-lab matrix RUN_DIR... --out ACCEPTANCE_MATRIX.md`` merges runs into one table.
A row is built from the run's JSON alone (``environment.json``, ``optimize.json``,
``verdict.json``), so a run measured elsewhere merges like any other.

Each metric cell is ``measured (target, status)`` for the chosen engine: its speedup over
the reference at the params batch size, its cosine minimum on the validation and the
held-out faces, its decision flips and accuracy delta on the verification pairs, and its
peak memory. A run that chose nothing shows its best failed candidate's figures under
``engine: none``; a failed run shows ``error``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcface_lab.core.files import write_text_atomic
from arcface_lab.errors import InputError
from arcface_lab.report.run_folder import RunFolder

__all__ = ["COLUMNS", "MatrixRow", "matrix_row", "to_markdown", "write_matrix"]

#: The matrix's columns, in order.
COLUMNS = (
    "run",
    "date",
    "model",
    "hardware",
    "engine",
    "speedup",
    "cosine min",
    "held-out cosine min",
    "decision flips",
    "accuracy delta",
    "peak memory",
    "verdict",
)


@dataclass(frozen=True)
class MatrixRow:
    """One run of the acceptance matrix: the cell text of each of :data:`COLUMNS`."""

    cells: tuple[str, ...]


def _number(value: float | None, digits: int = 5) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.{digits}f}"


def _check_for(checks: Sequence[Mapping[str, Any]], suffix: str, precision: str) -> Any:
    """The verdict check named ``<precision> <suffix>`` (the chosen precision's gate)."""
    wanted = f"{precision} {suffix}"
    return next((c for c in checks if c["metric"] == wanted), None)


def _cell(measured: str, check: Mapping[str, Any] | None) -> str:
    if check is None:
        return measured
    return f"{measured} ({check['target']}, {check['status']})"


def _speed_cell(verdict: Mapping[str, Any]) -> str:
    check = next((c for c in verdict["checks"] if c["metric"].startswith("chosen engine")), None)
    if check is None or check.get("measured") is None:
        return "-"
    batch = check["metric"].rsplit(" ", 1)[-1]
    return _cell(f"{float(check['measured']):.2f}x @ b{batch}", check)


def _memory(candidate: Mapping[str, Any]) -> str:
    memory = candidate.get("peak_memory") or {}
    mb = memory.get("peak_memory_mb")
    return "-" if mb is None else f"{float(mb):.0f} MB {memory.get('memory_kind', '')}".rstrip()


def _model(env: Mapping[str, Any]) -> str:
    model = env["model"]
    sha = (model.get("sha256") or "")[:12]
    return f"{model['spec']} ({sha})" if sha else str(model["spec"])


def _hardware(env: Mapping[str, Any]) -> str:
    gpu = env.get("gpu") or {}
    cpu = (env.get("hardware") or {}).get("cpu") or {}
    gen = cpu.get("generation")
    if cpu.get("isa_cap"):
        gen = f"{gen or 'CPU'} capped at {cpu['isa_cap']}"
    what = gpu.get("name") or (f"{env.get('cpu', '?')} ({gen})" if gen else env.get("cpu", "?"))
    return f"{env.get('hardware_class', '?')}: {what}"


def matrix_row(run_dir: str | Path) -> MatrixRow:
    """The acceptance-matrix row of the run folder ``run_dir``.

    Raises:
        InputError: ``run_dir`` is not a run folder, or one of its files is not valid JSON.
    """
    folder = RunFolder(Path(run_dir))
    env = folder.read("environment")
    date = str(env.get("started_at", ""))[:10]
    head = (folder.run_id, date, _model(env), _hardware(env))
    verdict = folder.read("verdict", required=False)
    error = folder.read("error", required=False)
    if error or verdict is None:
        why = (error or {}).get("error", "no verdict.json").splitlines()[0][:80]
        return MatrixRow((*head, "-", "-", "-", "-", "-", "-", "-", f"error: {why}"))
    optimized = folder.read("optimize", required=False) or {}
    cands = optimized.get("candidates") or []
    chosen = next((c for c in cands if c["status"] == "chosen"), None)
    ran = [c for c in cands if c.get("cosine_min") is not None]
    shown = chosen or (max(ran, key=lambda c: c["cosine_min"]) if ran else None)
    checks = verdict["checks"]
    if shown is None:
        cells = ["-"] * 6
    else:
        p = shown["precision"]
        delta = shown.get("accuracy_delta")
        cells = [
            _cell(_number(shown.get("cosine_min")), _check_for(checks, "cosine min", p)),
            _cell(
                _number(shown.get("held_out_cosine_min")),
                _check_for(checks, "held-out cosine min", p),
            ),
            _cell(_number(shown.get("decision_flips")), _check_for(checks, "decision flips", p)),
            _cell(
                _number(None if delta is None else abs(delta), 4),
                _check_for(checks, "|accuracy delta|", p),
            ),
            _memory(shown),
        ]
        cells.insert(0, _speed_cell(verdict))
    engine = chosen["label"] if chosen else "none" + (f" (best: {shown['label']})" if shown else "")
    return MatrixRow((*head, engine, *cells, "PASS" if verdict["passed"] else "FAIL"))


def _escape(cell: str) -> str:
    """A cell safe inside a Markdown table row (``|`` would end the cell)."""
    return cell.replace("|", "\\|").replace("\n", " ")


def to_markdown(rows: Iterable[MatrixRow]) -> str:
    """The rows as one Markdown table, header first."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(_escape(c) for c in r.cells) + " |" for r in rows),
    ]
    return "\n".join(lines) + "\n"


def write_matrix(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Merge the runs ``run_dirs`` into one ``ACCEPTANCE_MATRIX.md`` at ``out`` (atomic).

    Rows keep the order given; a run given twice is one row.

    Raises:
        InputError: no run folders, or one of them is not a run folder.
    """
    if not run_dirs:
        raise InputError("matrix: no run folders given", argument="run_dirs")
    seen: dict[Path, MatrixRow] = {}
    for run_dir in run_dirs:
        key = Path(run_dir).resolve()
        if key not in seen:
            seen[key] = matrix_row(run_dir)
    out = Path(out)
    if out.is_dir():
        raise InputError(f"out {out}: is a folder; expected a Markdown file", argument="out")
    text = "# Acceptance matrix\n\n" + to_markdown(seen.values())
    write_text_atomic(out, text)
    return out
