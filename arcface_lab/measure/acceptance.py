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

from arcface_lab.config.params import ReenrolmentParams, Thresholds
from arcface_lab.core.speed import contains, format_interval

__all__ = [
    "Check",
    "evaluate",
    "format_checks",
    "gate_checks",
    "reenrolment",
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


def _transfer(rows: Sequence[Mapping[str, Any]], key: str, target: float) -> Mapping[str, Any]:
    return next((r for r in rows if r.get(key) == target), {})


def reenrolment(
    pairs_mixed: Mapping[str, Any] | None,
    identification_mixed: Mapping[str, Any] | None,
    limits: ReenrolmentParams,
) -> dict[str, Any]:
    """Must a gallery enrolled with the reference be enrolled again for this engine?

    Reads the threshold transfer of :func:`arcface_lab.core.lowfar.compare_all_pairs`
    (``mixed``) and :func:`~arcface_lab.core.lowfar.compare_identification`: at each
    operating point of ``limits``, the reference's threshold applied to the mixed
    comparisons (reference gallery, engine probes). ``required`` is True when any point
    loses more TAR (gains more FNIR) or accepts more impostors than ``limits`` allow,
    False when every point holds, None when no point could be measured. ``reason`` is
    one sentence naming the worst point.
    """
    points: list[dict[str, Any]] = []
    checks = (
        ("1:1", "far", limits.fars, (pairs_mixed or {}).get("threshold_transfer") or []),
        ("1:N", "fpir", limits.fpirs, (identification_mixed or {}).get("threshold_transfer") or []),
    )
    for mode, rate, targets, rows in checks:
        for target in targets:
            row = _transfer(rows, f"{rate}_target", target)
            point: dict[str, Any] = {"mode": mode, rate: target}
            if not row.get("supported"):
                why = row.get("reason") or f"{rate.upper()} {target:g} was not measured"
                points.append({**point, "judged": False, "reason": why})
                continue
            if mode == "1:1":
                loss = float(row["tar_reference"]) - float(row["tar_measured"])
                loss_max, what = limits.tar_loss_max, "TAR loss"
                figures = {
                    "tar_reference": row["tar_reference"],
                    "tar_mixed": row["tar_measured"],
                    "tar_loss": loss,
                }
            else:
                loss = float(row["fnir_measured"]) - float(row["fnir_reference"])
                loss_max, what = limits.fnir_rise_max, "FNIR rise"
                figures = {
                    "fnir_reference": row["fnir_reference"],
                    "fnir_mixed": row["fnir_measured"],
                    "fnir_rise": loss,
                }
            measured = float(row[f"{rate}_measured"])
            inflation = measured / target
            excess = max(loss / loss_max if loss_max else float(loss > 0),
                         inflation / limits.far_inflation_max)  # fmt: skip
            points.append(
                {
                    **point,
                    "judged": True,
                    "threshold": row["threshold"],
                    **figures,
                    f"{rate}_mixed": measured,
                    f"{rate}_inflation": inflation,
                    "decision_flips": int(row["decision_flips"]),
                    "holds": loss <= loss_max and inflation <= limits.far_inflation_max,
                    "excess": excess,
                    "what": what,
                }
            )
    judged = [p for p in points if p["judged"]]
    limits_dict = asdict(limits)
    if not judged:
        return {
            "required": None,
            "reason": "not judged: no operating point could be measured on these faces",
            "points": points,
            "limits": limits_dict,
        }
    worst = max(judged, key=lambda p: p["excess"])
    rate = "far" if worst["mode"] == "1:1" else "fpir"
    where = f"{worst['mode']} at {rate.upper()} {worst[rate]:g}"
    loss_key = "tar_loss" if worst["mode"] == "1:1" else "fnir_rise"
    loss_max = limits.tar_loss_max if worst["mode"] == "1:1" else limits.fnir_rise_max
    said = (
        f"{worst['what']} {worst[loss_key]:+.4f} (at most {loss_max:g}), "
        f"{rate.upper()} {worst[f'{rate}_mixed']:.2g} against a target of {worst[rate]:g} "
        f"({worst[f'{rate}_inflation']:.2f}x, at most {limits.far_inflation_max:g}x), "
        f"{worst['decision_flips']} decision flip(s)"
    )
    required = not all(p["holds"] for p in judged)
    if required:
        reason = (
            f"Re-enrol the gallery: with the reference's gallery, this engine's probes at the "
            f"reference's threshold miss the limits at {where}: {said}."
        )
    else:
        reason = (
            f"No re-enrolment needed: every operating point holds with the reference's "
            f"gallery and threshold; the closest is {where}: {said}."
        )
    return {"required": required, "reason": reason, "points": points, "limits": limits_dict}
