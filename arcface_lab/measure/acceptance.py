"""Measured metrics against the params' thresholds: the one threshold check and verdict format.

Every target comes from ``params.thresholds``. A target with nothing measured
for it (no backend could run that precision, say) is reported as ``missing``
and fails, never silently passes; a precision this hardware cannot run
natively is one ``n/a`` row with the reason, which neither passes nor fails.
The run, ``make bench``, optimize, the CLI's ``--check`` and the notebooks all
judge and print through this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from arcface_lab.config.params import Thresholds
from arcface_lab.core.speed import contains, format_interval

__all__ = [
    "Check",
    "evaluate",
    "format_checks",
    "gate_checks",
    "speed_check",
    "verdict_passed",
]


@dataclass(frozen=True)
class Check:
    """One row of the verdict table.

    ``applicable`` is False for a row that does not apply on this hardware (``n/a``):
    it is shown with its reason and counts neither way.
    """

    metric: str
    target: str
    measured: float | None
    passed: bool
    note: str = ""
    applicable: bool = True
    #: What the hardware allows (speed targets): shown beside the target, never judged.
    floor: str = ""

    @property
    def status(self) -> str:
        """``pass``, ``FAIL`` or ``n/a``."""
        if not self.applicable:
            return "n/a"
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        return cls(
            d["metric"],
            d["target"],
            d.get("measured"),
            bool(d["passed"]),
            d.get("note", ""),
            bool(d.get("applicable", True)),
            d.get("floor", ""),
        )


def verdict_passed(checks: Iterable[Check]) -> bool:
    """PASS: at least one applicable check, and every applicable check passed."""
    applicable = [c for c in checks if c.applicable]
    return bool(applicable) and all(c.passed for c in applicable)


def _check(
    metric: str, measured: float | None, op: str, target: float, note: str = "", floor: str = ""
) -> Check:
    if measured is None:
        return Check(metric, f"{op} {target:g}", None, False, note or "not measured", floor=floor)
    ok = {">=": measured >= target, "<=": measured <= target, "<": measured < target}[op]
    return Check(metric, f"{op} {target:g}", measured, bool(ok), note, floor=floor)


def not_applicable(metric: str, reason: str) -> Check:
    """A row that does not apply on this hardware, with the reason."""
    return Check(metric, "-", None, False, reason, applicable=False)


def gate_checks(
    precision: str, r: Mapping[str, Any], thresholds: Thresholds, label: str | None = None
) -> list[Check]:
    """The face-recognition gates for one engine of ``precision``.

    ``r`` may hold ``drift.min``, ``held_out.min`` (faces never used for calibration
    or gating), ``verification.accuracy_delta`` and ``verification.decision_flips``;
    ``unavailable`` (a reason) when nothing ran, which fails every gate.
    """
    label = label or precision
    why = r.get("unavailable")
    drift = r.get("drift") or {}
    held_out = r.get("held_out")
    ver = r.get("verification") or {}
    checks: list[Check] = []
    if precision in thresholds.cosine_min:
        target = thresholds.cosine_min[precision]
        checks.append(_check(f"{label} cosine min", drift.get("min"), ">=", target, why or ""))
        if held_out is not None:
            checks.append(_check(f"{label} held-out cosine min", held_out.get("min"), ">=", target))
    if precision in thresholds.accuracy_delta_max:
        delta = ver.get("accuracy_delta")
        checks.append(
            _check(
                f"{label} |accuracy delta|",
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
                f"{label} decision flips",
                None if flips is None else float(flips),
                "<=",
                thresholds.decision_flips_max,
                why or "",
            )
        )
    return checks


def evaluate(results: Mapping[str, Mapping[str, Any]], thresholds: Thresholds) -> list[Check]:
    """Checks for per-precision ``results`` (see :func:`arcface_lab.runs.pipeline.run`).

    ``results[precision]`` holds what :func:`gate_checks` reads and ``peak_vram_mb``;
    ``not_applicable`` (a reason) makes the precision one ``n/a`` row.
    """
    checks: list[Check] = []
    for precision, r in results.items():
        if r.get("not_applicable"):
            checks.append(not_applicable(precision, r["not_applicable"]))
            continue
        checks += gate_checks(precision, r, thresholds)
        if thresholds.vram_mb_max is not None:
            vram = r.get("peak_vram_mb")
            note = r.get("unavailable") or ("" if vram is not None else "no GPU in this run")
            checks.append(
                _check(f"{precision} peak VRAM (MB)", vram, "<=", thresholds.vram_mb_max, note)
            )
    return checks


def speed_check(
    engine: str,
    speedup: float | None,
    batch: int,
    hardware_class: str,
    thresholds: Thresholds,
    interval: Sequence[float] | None = None,
) -> Check:
    """The chosen ``engine``'s speedup at ``batch`` against its hardware class's target.

    ``n/a`` (with the measured figure) where the params set no target for the class.
    ``interval`` (the speedup's 95 % interval) is shown; when it contains the target the
    note says so: the check still judges on the median, but the run cannot tell.
    """
    metric = f"chosen engine speedup @ batch {batch}"
    found = thresholds.speed_target(hardware_class)
    if found is None:
        measured = "not measured" if speedup is None else f"measured {speedup:.2f}x"
        return Check(
            metric,
            "-",
            speedup,
            False,
            f"{engine}: no speed target for {hardware_class} in these params ({measured})",
            applicable=False,
        )
    key, target = found
    note = f"{engine}; target for {key}"
    if interval is not None:
        note += f"; 95 % interval {format_interval(interval)}"
        if contains(interval, target.speedup_min):
            note += f", which contains the target {target.speedup_min:g}: judged on the median"
    return _check(metric, speedup, ">=", target.speedup_min, note, floor=target.floor)


def _measured(c: Check) -> str:
    if c.measured is None:
        return "n/a"
    return f"{c.measured:.0f}" if float(c.measured).is_integer() else f"{c.measured:.6g}"


def format_checks(checks: Iterable[Check], verdict: bool = True) -> str:
    """The verdict table as text: metric, target, measured, status (with the note)."""
    checks = list(checks)
    width = max([36, *(len(c.metric) + 1 for c in checks)])
    rows = [f"{'metric':<{width}} {'target':<12} {'measured':<14} verdict"]
    for c in checks:
        status = c.status if c.status == "pass" and not c.note else f"{c.status} {c.note}"
        rows.append(f"{c.metric:<{width}} {c.target:<12} {_measured(c):<14} {status.rstrip()}")
    if verdict:
        rows.append(f"verdict: {'PASS' if verdict_passed(checks) else 'FAIL'}")
    return "\n".join(rows)
