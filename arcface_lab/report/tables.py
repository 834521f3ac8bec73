"""The tables of a run, built once from its JSON: ``index.html`` and the notebooks show them.

Each function takes the parsed run file it needs (see
:class:`~arcface_lab.report.run_folder.RunFolder`) and returns a :class:`Table`;
``index.html`` renders its rows, a notebook shows ``table.frame()`` (pandas).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arcface_lab.core.speed import format_interval

__all__ = [
    "Table",
    "candidates",
    "checks",
    "drift",
    "engines",
    "environment",
    "latency",
    "lowest_far",
    "minutes",
    "precision_summary",
    "score_distributions",
    "verification",
]


@dataclass(frozen=True)
class Table:
    """A header and its rows (plain values: numbers, strings, None)."""

    header: tuple[str, ...]
    rows: list[list[Any]] = field(default_factory=list)

    def frame(self, index: str | None = None) -> Any:
        """The rows as a pandas DataFrame, indexed by column ``index`` when given."""
        import pandas as pd

        df = pd.DataFrame(self.rows, columns=list(self.header))
        return df.set_index(index) if index else df


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def repeats(counts: Mapping[str, Any] | None) -> str | None:
    """``candidate / reference`` timed repeats behind a speedup."""
    if not counts:
        return None
    return f"{counts.get('candidate')} / {counts.get('reference')}"


def precision_summary(info: Mapping[str, Any]) -> str:
    """What an engine ran in, from what it recorded (``engine.info.to_dict()``).

    OpenVINO's counts are read back from the compiled model and TensorRT's from its
    engine inspector; for the others the asked precision and what stayed FP32.
    """
    details = info.get("details") or {}
    precision = str(info.get("precision", "?"))

    def counts(mapping: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in mapping.items())

    if details.get("runtime_precisions"):
        return f"{counts(details['runtime_precisions'])} layers (compiled model)"
    layer_counts = (details.get("layer_precisions") or {}).get("counts")
    if layer_counts:
        return f"{counts(layer_counts)} layers (engine inspector)"
    if details.get("providers"):
        return f"{precision} on {details['providers'][0]}"
    kept = details.get("fp32_layers")
    return f"{precision}, FP32: {', '.join(kept)}" if kept else precision


def candidates(optimized: Mapping[str, Any]) -> Table:
    """``optimize.json``: every candidate with its status, speed, gates and reason."""
    rows = []
    for c in optimized["candidates"]:
        lat = c.get("latency_ms") or {}
        rows.append(
            [
                c["label"],
                c["status"],
                c["support"]["status"],
                _round(lat.get("median"), 1),
                _round(c["speedup_vs_reference"], 2),
                format_interval(c.get("speedup_ci")),
                repeats(c.get("repeats")),
                c["cosine_min"],
                c["held_out_cosine_min"],
                c["decision_flips"],
                _round(c["first_run_s"], 1),
                c["reason"],
            ]
        )
    header = (
        "candidate",
        "status",
        "on this host",
        "median ms",
        "speedup",
        "95 % interval",
        "repeats (cand. / ref.)",
        "cosine min",
        "held-out cosine min",
        "flips",
        "first run s",
        "reason",
    )
    return Table(header, rows)


#: The phases of a candidate's seconds, in the order they happen (``optimize.json``'s
#: ``phases_s``: the worker's start-up, its phases, then the gating after it).
PHASE_COLUMNS = (
    "start",
    "prepare",
    "convert",
    "calibrate",
    "search",
    "build",
    "probe",
    "embed",
    "time",
    "gate",
)


def minutes(optimized: Mapping[str, Any]) -> Table:
    """Where the run's seconds went, per step and phase.

    The inputs (faces and pairs, read or aligned), the reference, one row per candidate
    that cost time (the reference's own row reuses its run), the reference timed again;
    the last row is the run's wall time.
    """
    run = optimized.get("phases_s") or {}

    def row(label: str, status: str, phases: Mapping[str, float]) -> list[Any]:
        cells = [_round(phases[k], 1) if k in phases else None for k in PHASE_COLUMNS]
        return [label, status, *cells, _round(sum(phases.values()), 1)]

    rows = []
    if "inputs" in run:  # read or aligned in this process: no phase of a worker's
        rows.append(["inputs", "", *[None] * len(PHASE_COLUMNS), _round(run["inputs"], 1)])
    ref = optimized["reference"]
    if ref.get("phases_s"):
        rows.append(row(f"{ref['label']} (reference)", "", ref["phases_s"]))
    for c in optimized["candidates"]:
        if c.get("phases_s"):
            rows.append(row(c["label"], c["status"], c["phases_s"]))
    if "reference_again" in run:  # a worker timing one batch size
        rows.append(row(f"{ref['label']} again", "", {"time": run["reference_again"]}))
    if rows:
        total = [None] * len(PHASE_COLUMNS)
        rows.append(["run (wall)", "", *total, _round(optimized.get("wall_s"), 1)])
    return Table(("step", "status", *PHASE_COLUMNS, "total s"), rows)


def checks(verdict: Mapping[str, Any]) -> Table:
    """``verdict.json``: each check with its target, what was measured and its status."""
    rows = [
        [c["metric"], c["target"], c["measured"], c["status"], c.get("note", ""), c.get("floor")]
        for c in verdict["checks"]
    ]
    return Table(("metric", "target", "measured", "status", "note", "floor"), rows)


def engines(drift_json: Mapping[str, Any]) -> Table:
    """``drift.json``: each engine that ran, what it ran in, its artifact and its fallbacks."""
    rows = []
    for name, e in (drift_json.get("engines") or {}).items():
        info = e["info"]
        art = info.get("artifact") or {}
        skipped = "; ".join(f"{f['backend']}: {f['reason']}" for f in info.get("fallbacks", []))
        rows.append(
            [
                name,
                info.get("device"),
                precision_summary(info),
                f"{art.get('kind', 'none')} ({art.get('origin', '-')})",
                (art.get("key") or "")[:16],
                _round(art["size"] / 2**20, 1) if art.get("size") else None,
                skipped or "none",
                "; ".join(info.get("warnings", [])) or "none",
            ]
        )
    header = (
        "engine",
        "device",
        "ran in",
        "artifact (origin)",
        "key",
        "size MB",
        "skipped backends",
        "warnings",
    )
    return Table(header, rows)


def drift(drift_json: Mapping[str, Any], thresholds: Mapping[str, Any]) -> Table:
    """``drift.json``: per-face cosine against the reference, with each precision's gate."""
    gates = thresholds.get("cosine_min") or {}
    rows = [
        [
            name,
            e["count"],
            e["min"],
            1 - e["min"],
            1 - e["p001"],
            1 - e["mean"],
            gates.get(e["info"]["precision"]),
        ]
        for name, e in (drift_json.get("engines") or {}).items()
    ]
    header = ("engine", "faces", "min cosine", "1 - min", "1 - p0.1%", "1 - mean", "cosine_min")
    return Table(header, rows)


def _far_label(ver: Mapping[str, Any]) -> str:
    """The FAR that ``TAR@FAR`` was asked at, from the first engine's record."""
    for e in (ver.get("engines") or {}).values():
        far = e["reference"]["tar_at_far"].get("far")
        if far is not None:
            return f"{far:g}"
    return "?"


def lowest_far(ver: Mapping[str, Any]) -> float | None:
    """The smallest FAR the pairs can measure: one false accept among the impostor pairs."""
    for e in (ver.get("engines") or {}).values():
        same = e.get("same")
        if same:
            impostors = len(same) - sum(bool(x) for x in same)
            return 1.0 / impostors if impostors else None
    return None


def verification(ver: Mapping[str, Any]) -> Table:
    """``verification.json``: 10-fold accuracy, TAR@FAR and decision flips against the reference.

    The TAR columns name the FAR they were taken at; :func:`lowest_far` says whether the
    pair count supports it.
    """
    far = _far_label(ver)
    rows = [
        [
            name,
            ver["pairs"],
            _round(e["reference"]["accuracy"], 4),
            _round(e["engine"]["accuracy"], 4),
            _round(e["accuracy_delta"], 4),
            e["decision_flips"],
            _round(e["reference"]["tar_at_far"]["tar"], 4),
            _round(e["engine"]["tar_at_far"]["tar"], 4),
        ]
        for name, e in (ver.get("engines") or {}).items()
    ]
    header = (
        "engine",
        "pairs",
        "reference acc",
        "engine acc",
        "delta",
        "decision flips",
        f"reference TAR @ FAR {far}",
        f"engine TAR @ FAR {far}",
    )
    return Table(header, rows)


def score_distributions(ver: Mapping[str, Any]) -> Table:
    """``verification.json``: genuine and impostor pair cosines, reference then each engine.

    Quantiles (min, 5 %, median, 95 %, max) per group, and the margin: the worst genuine
    minus the best impostor (positive: one threshold separates every pair).
    """
    import numpy as np

    engines = ver.get("engines") or {}
    if not engines:
        return Table((), [])
    first = next(iter(engines.values()))
    same = np.asarray(first.get("same", ()), dtype=bool)
    series = [("reference", first.get("reference_scores"))]
    series += [(name, e.get("engine_scores")) for name, e in engines.items()]
    rows = []
    for name, scores in series:
        if scores is None or len(scores) != len(same) or not len(same):
            continue
        s = np.asarray(scores, dtype=float)
        for group, mask in (("genuine", same), ("impostor", ~same)):
            if not mask.any():
                continue
            q = np.quantile(s[mask], [0.0, 0.05, 0.5, 0.95, 1.0])
            rows.append([name, group, int(mask.sum()), *(_round(float(v), 4) for v in q)])
        if same.any() and (~same).any():
            margin = float(s[same].min() - s[~same].max())
            rows.append([name, "margin", None, None, None, _round(margin, 4), None, None])
    header = ("scores of", "pairs", "n", "min", "p5", "median", "p95", "max")
    return Table(header, rows)


def latency(bench: Mapping[str, Any]) -> Table:
    """``bench.json``: timings per engine and batch size; the reference's rows say so.

    Latencies to 0.1 ms, speedups to 0.01, memory in whole MB; ``setup s`` is the
    engine's creation in its timing process (a store hit, not a build, when it was cached).
    """
    rows = []
    for r in bench.get("records") or []:
        memory = r.get("peak_memory_mb")
        lat = r["latency_ms"]
        rows.append(
            [
                f"reference {r['engine']}" if r.get("reference") else r["engine"],
                r["batch_size"],
                _round(lat["median"], 1),
                _round(lat["p90"], 1),
                _round(lat.get("p99"), 1),
                _round(r["throughput_ips"], 1),
                _round(r["speedup_vs_reference"], 2),
                format_interval(r.get("speedup_ci")),
                _round(100 * r["cov"], 1),
                r.get("repeats"),
                r.get("stable"),
                _round(r.get("setup_s"), 1),
                _round(r.get("cosine_min"), 5),
                None if memory is None else f"{memory:.0f} {r['memory_kind']}",
                r["device"],
            ]
        )
    header = (
        "engine",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "img/s",
        "speedup",
        "95 % interval",
        "CoV %",
        "repeats",
        "stable",
        "setup s",
        "cosine min",
        "peak MB",
        "device",
    )
    return Table(header, rows)


def environment(env: Mapping[str, Any]) -> Table:
    """``environment.json``: the model, the machine and the library versions."""
    gpu = env.get("gpu") or {}
    model = env["model"]
    rows: list[list[Any]] = [
        ["model", f"{model['spec']} ({model.get('kind', '?')}, {model.get('arch') or '?'})"],
        ["model sha256", model.get("sha256") or "n/a"],
        ["hardware class", env.get("hardware_class", "not recorded")],
        ["cpu", f"{env['cpu']} ({env.get('cpu_count', '?')} logical cores)"],
        ["gpu", gpu.get("name", "none")],
    ]
    if gpu:
        rows += [
            ["compute capability", gpu.get("capability", "n/a")],
            ["memory", f"{gpu['memory_mb']} MiB" if gpu.get("memory_mb") else "not recorded"],
            ["CUDA", gpu.get("cuda", "n/a")],
            ["cuDNN", gpu.get("cudnn") or "not recorded"],
            ["driver", gpu.get("driver") or "not recorded"],
        ]
    rows += [
        ["platform", env["platform"]],
        ["host", env.get("host", "")],
        ["params file", env["params_file"]],
        ["started", env["started_at"]],
    ] + [[k, v] for k, v in env["versions"].items()]
    return Table(("", "value"), rows)


def scale_throughput(scale: Mapping[str, Any]) -> Table:
    """``scale.json``: each engine's streaming throughput and peak memory on the scale set."""
    rows = []
    for key in ("reference", "engine"):
        r = scale.get(key)
        if not r:
            continue
        memory = r.get("peak_rss_mb")
        rows.append(
            [
                f"reference {r['engine']}" if key == "reference" else r["engine"],
                int(r["faces"]),
                _round(r["seconds"], 1),
                _round(r.get("images_per_s"), 1),
                _round(r.get("engine_images_per_s"), 1),
                None if memory is None else round(memory),
                r.get("peak_rss_scope"),
            ]
        )
    header = ("engine", "faces", "seconds", "images/s end to end", "images/s in the engine",
              "peak RSS MB", "memory measured")  # fmt: skip
    return Table(header, rows)


def scale_low_far(scale: Mapping[str, Any]) -> Table:
    """All-pairs TAR at each FAR, reference and engine, with the decisions that flip."""
    rows = []
    for p in (scale.get("all_pairs") or {}).get("points", []):
        if not p["supported"]:
            rows.append([f"{p['far']:g}", None, None, None, None, None, p["reason"]])
            continue
        rows.append(
            [
                f"{p['far']:g}",
                int(p["impostors_at_threshold"]),
                _round(p["reference_tar"], 5),
                _round(p["candidate_tar"], 5),
                _round(p["tar_delta"], 5),
                int(p["decision_flips"]),
                f"genuine lost {p['genuine_lost']}, gained {p['genuine_gained']}; impostors "
                f"accepted {p['impostor_accepted']}, rejected {p['impostor_rejected']}",
            ]
        )
    header = ("FAR", "impostor pairs at threshold", "reference TAR", "engine TAR",
              "TAR delta", "flips", "flips at the reference's threshold")  # fmt: skip
    return Table(header, rows)


def scale_identification(scale: Mapping[str, Any]) -> Table:
    """1:N: rank-k and FNIR at each FPIR, reference and engine."""
    ident = scale.get("identification") or {}
    ref, cand = ident.get("reference") or {}, ident.get("candidate") or {}
    flips = {"1": int(ident.get("rank1_flips", 0))}  # mates at rank 1 in one engine only
    rows = [
        [f"rank-{k}", _round(v, 5), _round((cand.get("rank") or {}).get(k), 5), flips.get(k)]
        for k, v in (ref.get("rank") or {}).items()
    ]
    for p in ident.get("points", []):
        if not p["supported"]:
            rows.append([f"FNIR @ FPIR {p['fpir']:g}", None, None, p["reason"]])
            continue
        rows.append(
            [
                f"FNIR @ FPIR {p['fpir']:g}",
                _round(p["reference_fnir"], 5),
                _round(p["candidate_fnir"], 5),
                int(p["decision_flips"]),
            ]
        )
    return Table(("1:N", "reference", "engine", "flips"), rows)


def realignment(alignment: Mapping[str, Any]) -> Table:
    """The re-alignment check of a run's real faces: each figure against its target."""
    check = alignment.get("realign") or {}
    t = check.get("targets") or {}
    engine = (check.get("engine") or {}).get("backend", "the reference")
    rows = [
        ["crops aligned again", check.get("faces"), None, check.get("detector")],
        ["crops lost (no face found again)", check.get("lost"), t.get("lost"), "must be 0"],
        [
            "landmarks to the template, median px",
            _round(check.get("px_median"), 3),
            t.get("px_median"),
            "mean of the five points per crop",
        ],
        ["landmarks to the template, max px", _round(check.get("px_max"), 3), t.get("px_max"), ""],
        ["worst single point px", _round(check.get("point_px_max"), 3), None, ""],
        [
            "embedding cosine, median",
            _round(check.get("cosine_median"), 5),
            None,
            f"re-aligned crop against the first, {engine} FP32",
        ],
        ["embedding cosine, min", _round(check.get("cosine_min"), 5), t.get("cosine_min"), ""],
    ]
    return Table(("re-alignment", "measured", "target", "note"), rows)


def reenrolment(block: Mapping[str, Any]) -> Table:
    """The re-enrolment verdict's operating points: reference against mixed."""
    rows = []
    for p in block.get("points") or []:
        rate = "far" if p["mode"] == "1:1" else "fpir"
        where = f"{p['mode']} {rate.upper()} {p[rate]:g}"
        if not p["judged"]:
            rows.append([where, None, None, None, None, None, p["reason"]])
            continue
        if p["mode"] == "1:1":
            ref, mix, loss = p["tar_reference"], p["tar_mixed"], p["tar_loss"]
        else:
            ref, mix, loss = p["fnir_reference"], p["fnir_mixed"], p["fnir_rise"]
        rows.append(
            [
                where,
                _round(ref, 5),
                _round(mix, 5),
                _round(loss, 5),
                f"{p[f'{rate}_mixed']:.2g} ({p[f'{rate}_inflation']:.2f}x)",
                p["decision_flips"],
                "holds" if p["holds"] else "RE-ENROL",
            ]
        )
    return Table(
        (
            "operating point",
            "reference TAR / FNIR",
            "mixed TAR / FNIR",
            "loss",
            "mixed FAR / FPIR (x target)",
            "decision flips",
            "",
        ),
        rows,
    )


def gallery_storage(block: Mapping[str, Any]) -> Table:
    """Each stored gallery against float32: bytes, TAR at the FARs, rank-1, FNIR, flips."""
    rows: list[list[Any]] = [
        ["float32", block.get("float32_bytes_per_face"), 1.0, None, None, None, None, ""]
    ]
    for r in block.get("storages") or []:
        if not r["supported"]:
            rows.append([r["storage"], None, None, None, None, None, None, r["reason"]])
            continue
        ver = [v for v in r["verification"] if v.get("supported", True)]
        ident = [p for p in r["identification"] if p.get("supported", True)]
        rows.append(
            [
                (
                    f"{r['storage']} ({r['probes']} of {r['lists']} lists searched)"
                    if "lists" in r
                    else r["storage"]
                ),
                r["bytes_per_face"],
                _round(r["compression"], 1),
                "; ".join(
                    f"{v['far']:g}: {v['tar_float32']:.4f} -> {v['tar']:.4f} "
                    f"(FAR {v['far_measured'] / v['far']:.2f}x)"
                    for v in ver
                )
                or None,
                sum(v["decision_flips"] for v in ver),
                (None if r["rank1"] is None else f"{r['rank1_float32']:.4f} -> {r['rank1']:.4f}"),
                "; ".join(
                    f"{p['fpir']:g}: {p['fnir_float32']:.4f} -> {p['fnir']:.4f}" for p in ident
                )
                or None,
                f"{r['rank1_flips']} rank-1, "
                f"{sum(p['decision_flips'] for p in ident)} at the FPIRs",
            ]
        )
    return Table(
        (
            "gallery stored as",
            "bytes a face",
            "x smaller",
            "TAR at FAR: float32 -> stored (the FAR it gives, x target)",
            "1:1 flips",
            "rank-1",
            "FNIR at FPIR",
            "1:N flips / note",
        ),
        rows,
    )
