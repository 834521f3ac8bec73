"""The frontier picture: every candidate's speed against its worst held-out face.

One point per candidate that ran: its speedup over the reference at the judged batch
(with its 95 % interval as a bar) against ``1 - worst held-out cosine`` on a log axis,
so FP32 engines (about 1e-7) and BF16/INT8 ones (about 1e-3) are both readable. The
cosine gates are vertical lines (a point right of its precision's gate fails it), the
hardware class's speed target a horizontal one, the chosen engine a star. Drawn from
``optimize.json`` alone, by the report (a PNG in ``index.html``) and notebook 03.

The switching picture (:func:`switching_figure`): TAR against FAR from the scale
section, for the reference alone, the engine alone and the mixed comparisons (a gallery
enrolled with the reference, the engine's probes), each at its own thresholds, and the
mixed comparisons at the reference's operating thresholds (what a deployment that does
not re-enrol sees).

The figures are :class:`matplotlib.figure.Figure`\\ s made without pyplot, so drawing
them never changes the caller's matplotlib backend.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

__all__ = [
    "FLOOR",
    "frontier_figure",
    "frontier_png",
    "frontier_points",
    "switching_figure",
    "switching_png",
]

#: ``1 - cosine`` below this is drawn at it (float32 embeddings agree to about 1e-7).
FLOOR = 1e-8


def frontier_points(optimized: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidates that ran, as points: label, precision, status, speedup, interval, error."""
    points = []
    for c in optimized.get("candidates") or []:
        if c.get("speedup_vs_reference") is None or c.get("held_out_cosine_min") is None:
            continue
        points.append(
            {
                "label": c["label"],
                "precision": c["precision"],
                "status": c["status"],
                "speedup": float(c["speedup_vs_reference"]),
                "ci": c.get("speedup_ci"),
                "error": max(1.0 - float(c["held_out_cosine_min"]), FLOOR),
            }
        )
    return points


def frontier_figure(
    optimized: Mapping[str, Any],
    gates: Mapping[str, float],
    target: float | None = None,
    target_label: str = "",
) -> Any:
    """The figure (see the module docstring). ``gates``: cosine minimum per precision."""
    from matplotlib.figure import Figure

    points = frontier_points(optimized)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colors = {"chosen": "tab:green", "passed": "tab:blue"}
    for p in points:
        color = colors.get(p["status"], "tab:red")
        lo, hi = p["ci"] or (p["speedup"], p["speedup"])
        ax.errorbar(
            p["error"],
            p["speedup"],
            yerr=[[p["speedup"] - lo], [hi - p["speedup"]]],
            fmt="*" if p["status"] == "chosen" else "o",
            markersize=14 if p["status"] == "chosen" else 7,
            color=color,
            capsize=3,
        )
    for group in _clusters(points):  # points a label apart share one list of labels
        top = max(group, key=lambda p: p["speedup"])
        text = "\n".join(f"{p['label']} {p['speedup']:.2f}x" for p in group)
        ax.annotate(
            text,
            (top["error"], top["speedup"]),
            xytext=(8, 2),
            textcoords="offset points",
            va="bottom",
            fontsize=8,
        )
    precisions = {p["precision"] for p in points}
    for value in sorted({gates[k] for k in precisions if k in gates}):
        names = "/".join(sorted(k for k in precisions if gates.get(k) == value))
        ax.axvline(1.0 - value, color="grey", ls="--", lw=1)
        ax.annotate(
            f"{names} gate: cosine >= {value:g}",
            (1.0 - value, 0.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, 4),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="bottom",
            color="grey",
            fontsize=8,
        )
    if target is not None:
        ax.axhline(target, color="tab:red", ls=":", lw=1.2)
        ax.annotate(
            f"target >= {target:g}x {target_label}".rstrip(),
            (1.0, target),
            xycoords=("axes fraction", "data"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            color="tab:red",
        )
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("1 - worst held-out cosine (log; right is further from the reference)")
    ax.set_ylabel(f"speedup at batch {optimized.get('batch_size', '?')} (95 % interval)")
    ax.set_title("Candidates: green star chosen, blue passed, red failed a gate")
    ax.grid(alpha=0.3, which="both")
    return fig


def _clusters(points: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Points within a third of a decade of error and 6 % of the speed axis of their
    neighbour, fastest first: their labels would overlap, so each group gets one list."""
    import math

    near = 0.06 * max([p["speedup"] for p in points] or [1.0])
    groups: list[list[dict[str, Any]]] = []
    for p in sorted(points, key=lambda p: (p["error"], -p["speedup"])):
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and abs(math.log10(p["error"]) - math.log10(last["error"])) < 1 / 3
            and abs(p["speedup"] - last["speedup"]) < near
        ):
            groups[-1].append(p)
        else:
            groups.append([p])
    return [sorted(g, key=lambda p: -p["speedup"]) for g in groups]


def frontier_png(
    optimized: Mapping[str, Any],
    gates: Mapping[str, float],
    target: float | None = None,
    target_label: str = "",
) -> str | None:
    """:func:`frontier_figure` as base64 PNG; None when no candidate ran or matplotlib is
    missing (the report then shows the table alone)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return None
    if not frontier_points(optimized):
        return None
    fig = frontier_figure(optimized, gates, target, target_label)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curve(points: Any, far_key: str = "far", tar_key: str = "tar") -> tuple[list, list]:
    rows = [p for p in points or [] if p.get("supported")]
    return [float(p[far_key]) for p in rows], [float(p[tar_key]) for p in rows]


def switching_figure(scale: Mapping[str, Any]) -> Any:
    """TAR against FAR (log) for reference, engine and mixed (see the module docstring)."""
    from matplotlib.figure import Figure

    pairs = scale.get("all_pairs") or {}
    mixed = pairs.get("mixed") or {}
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for label, points, style in (
        ("reference gallery + reference probes", (pairs.get("reference") or {}).get("points"),
         "o-"),
        ("engine gallery + engine probes", (pairs.get("candidate") or {}).get("points"), "s--"),
        ("reference gallery + engine probes (mixed)", mixed.get("tar_at_far"), "^-"),
    ):  # fmt: skip
        far, tar = _curve(points)
        if far:
            ax.plot(far, tar, style, label=label, markersize=5)
    far, tar = _curve(mixed.get("threshold_transfer"), "far_measured", "tar_measured")
    if far:
        ax.plot(
            [max(f, FLOOR) for f in far], tar, "x", color="tab:red", markersize=9,
            label="mixed at the reference's thresholds (no re-enrolment)",
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("FAR (impostor pairs accepted)")
    ax.set_ylabel("TAR (genuine pairs accepted)")
    ax.set_title("Switching engines: one gallery, two embedders")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def switching_png(scale: Mapping[str, Any]) -> str | None:
    """:func:`switching_figure` as base64 PNG; None without mixed figures or matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return None
    if not ((scale.get("all_pairs") or {}).get("mixed") or {}).get("tar_at_far"):
        return None
    fig = switching_figure(scale)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96)
    return base64.b64encode(buf.getvalue()).decode("ascii")
