"""Measured metrics against the params' thresholds: the verdict of a run.

Every target comes from ``params.thresholds``; a target with nothing measured
for it (no backend could run that precision, say) is reported as ``missing``
and fails, never silently passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from arcface_lab.params import Thresholds

__all__ = ["Check", "evaluate", "matrix_row"]


@dataclass(frozen=True)
class Check:
    """One row of the verdict table."""

    metric: str
    target: str
    measured: float | None
    passed: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(metric: str, measured: float | None, op: str, target: float, note: str = "") -> Check:
    if measured is None:
        return Check(metric, f"{op} {target:g}", None, False, note or "not measured")
    ok = {">=": measured >= target, "<=": measured <= target, "<": measured < target}[op]
    return Check(metric, f"{op} {target:g}", measured, bool(ok), note)


def evaluate(results: Mapping[str, Mapping[str, Any]], thresholds: Thresholds) -> list[Check]:
    """Checks for per-precision ``results`` (see :func:`arcface_lab.pipeline.run`).

    ``results[precision]`` may hold ``drift.min``, ``verification.accuracy_delta``,
    ``verification.decision_flips``, ``speedup`` (batch size -> ratio) and
    ``peak_vram_mb``; ``unavailable`` (a reason) when no backend ran it.
    """
    checks: list[Check] = []
    for precision, r in results.items():
        why = r.get("unavailable")
        drift = r.get("drift") or {}
        ver = r.get("verification") or {}
        if precision in thresholds.cosine_min:
            checks.append(
                _check(
                    f"{precision} cosine min",
                    drift.get("min"),
                    ">=",
                    thresholds.cosine_min[precision],
                    why or "",
                )
            )
        if precision in thresholds.accuracy_delta_max:
            delta = ver.get("accuracy_delta")
            checks.append(
                _check(
                    f"{precision} |accuracy delta|",
                    None if delta is None else abs(delta),
                    "<",
                    thresholds.accuracy_delta_max[precision],
                    why or "",
                )
            )
        if thresholds.decision_flips_max is not None and (ver or why):
            flips = ver.get("decision_flips")
            checks.append(
                _check(
                    f"{precision} decision flips",
                    None if flips is None else float(flips),
                    "<=",
                    thresholds.decision_flips_max,
                    why or "",
                )
            )
        if precision in thresholds.speedup_min:
            speedup = (r.get("speedup") or {}).get(thresholds.speedup_batch)
            checks.append(
                _check(
                    f"{precision} speedup @ batch {thresholds.speedup_batch}",
                    speedup,
                    ">=",
                    thresholds.speedup_min[precision],
                    why or "",
                )
            )
        if thresholds.vram_mb_max is not None:
            vram = r.get("peak_vram_mb")
            note = why or ("" if vram is not None else "no GPU in this run")
            checks.append(
                _check(f"{precision} peak VRAM (MB)", vram, "<=", thresholds.vram_mb_max, note)
            )
    return checks


def matrix_row(name: str, device: str, checks: list[Check]) -> str:
    """The run as one markdown row of the acceptance matrix."""
    cells = [
        f"{c.metric}: {'n/a' if c.measured is None else f'{c.measured:.6g}'} "
        f"({'pass' if c.passed else 'FAIL'})"
        for c in checks
    ]
    verdict = "PASS" if checks and all(c.passed for c in checks) else "FAIL"
    return f"| {name} | {device} | {'; '.join(cells)} | {verdict} |"
