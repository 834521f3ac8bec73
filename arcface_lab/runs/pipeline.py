"""A run: optimize on this host, check against the params' thresholds, write a run folder.

The measurement is :func:`arcface_lab.measure.optimize.optimize`: the reference,
then every native candidate of ``backends.chain`` x ``backends.precisions``, each
in a process of its own, gated and timed; the fastest that passes is chosen.
Each step writes JSON into the run folder (``environment.json``,
``optimize.json``, ``drift.json``, ``verification.json``, ``bench.json``,
``verdict.json``), then the notebooks are executed against that folder with
papermill and turned into HTML pages (:mod:`arcface_lab.report.notebooks`), and
:mod:`arcface_lab.report.html` renders ``index.html`` from the JSON alone.

The verdict has, per precision, the gates of its best candidate (the chosen one,
else the fastest that passed, else the closest to the reference), or one ``n/a``
row when this hardware runs that precision natively on no backend; then the chosen
engine's speedup against its hardware class's target (``thresholds.speed_targets``),
and peak VRAM on a GPU. The folder is written as ``.<run-id>.partial`` and renamed
when complete; a run that fails (a notebook included) is renamed ``<run-id>.failed``
with ``error.json``, so an earlier run is never overwritten and a half-written
folder is never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arcface_lab.config.params import Params
from arcface_lab.core.files import PARTIAL_SUFFIX
from arcface_lab.engines.registry import check_params
from arcface_lab.errors import InputError
from arcface_lab.measure.acceptance import (
    Check,
    evaluate,
    format_checks,
    verdict_passed,
)
from arcface_lab.measure.optimize import candidate_table, chosen_line, json_default
from arcface_lab.report.run_folder import RunFolder

__all__ = ["RunResult", "environment", "run"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    checks: list[Check] = field(default_factory=list)
    device: str = "cpu"
    optimize: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return verdict_passed(self.checks)

    def summary_text(self) -> str:
        lines = []
        if self.optimize:
            host = self.optimize["host"]
            lines += [
                f"hardware class: {host['class']}" + (" (injected)" if host["injected"] else ""),
                *candidate_table(self.optimize),
                chosen_line(self.optimize),
                "",
            ]
        return "\n".join([*lines, format_checks(self.checks)])


def environment(params: Params, model: Any) -> dict[str, Any]:
    """Where and with what a run was measured (the host probe, the model, the params)."""
    from arcface_lab.core.host import probe
    from arcface_lab.core.version import git_commit

    host = probe()
    gpu = host.gpus[0] if host.gpus else None
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": host.cpu.model,
        "cpu_count": host.cpu.cores,
        "hardware_class": host.cls,
        "hardware": host.to_dict(),
        "gpu": None,
        "versions": host.versions,
        "git": git_commit(),
        "model": model.describe(),
        "params_file": params.source,
        "params": params.to_dict(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if gpu is not None:
        import torch

        env["gpu"] = {
            "name": gpu.name,
            "capability": ".".join(map(str, gpu.capability)),
            "memory_mb": gpu.memory_mb,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "driver": gpu.driver,
        }
    return env


def _representative(precision: str, ran: list[Any]) -> Any | None:
    """The candidate whose gates stand for ``precision``: chosen, fastest passed, or closest."""
    mine = [c for c in ran if c.candidate.precision == precision]
    if not mine:
        return None
    for status in ("chosen", "passed"):
        found = [c for c in mine if c.status == status]
        if found:
            return min(found, key=lambda c: c.latency_ms["median"])
    return max(mine, key=lambda c: c.cosine_min)


def _per_precision(params: Params, opt: Any) -> dict[str, dict[str, Any]]:
    """What :func:`arcface_lab.measure.acceptance.evaluate` judges, one per params precision.

    optimize measures the first candidate of each precision in full; a precision whose
    measured candidates all missed a gate while another of its candidates was
    ``cannot_win`` (not timed: it could not be the fastest) is not judged, and says so.
    """
    from arcface_lab.engines.registry import get_backend

    results: dict[str, dict[str, Any]] = {}
    ran = opt.ran()
    for precision in params.backends.precisions:
        rep = _representative(precision, ran)
        pruned = [
            c
            for c in opt.candidates
            if c.candidate.precision == precision and c.status == "cannot_win"
        ]
        if rep is not None and not rep.passed and pruned:
            # what could have passed was not timed: it could not be the fastest anyway
            skipped = "; ".join(f"{c.candidate.label} not timed ({c.reason})" for c in pruned)
            results[precision] = {
                "not_applicable": f"not judged: {skipped}; {rep.candidate.label}, the one "
                f"measured, {rep.status} ({rep.reason}). --time-all measures every candidate"
            }
            continue
        if rep is not None:
            memory = (rep.worker or {}).get("memory") or {}
            results[precision] = {
                "engine": rep.candidate.label,
                "backend": rep.candidate.backend,
                "drift": rep.drift.to_dict(),
                "held_out": rep.held_out.to_dict(),
                "verification": rep.verification,
                "speedup": {r["batch_size"]: r["speedup_vs_reference"] for r in rep.records},
                "peak_vram_mb": (
                    memory.get("peak_memory_mb") if memory.get("memory_kind") == "vram" else None
                ),
                "peak_memory": memory,
            }
            continue
        mine = [c for c in opt.candidates if c.candidate.precision == precision]
        # not native here although the backend is installed: the hardware's limit, not a fault
        hardware = [
            c
            for c in mine
            if not c.candidate.support.native
            and get_backend(c.candidate.backend).availability() is None
        ]
        why = "; ".join(f"{c.candidate.label}: {c.reason}" for c in mine) or (
            f"no backend of {', '.join(params.backends.chain)} has {precision}"
        )
        if len(hardware) == len(mine):
            reasons = "; ".join(
                dict.fromkeys(f"{c.candidate.backend}: {c.candidate.support.reason}" for c in mine)
            )
            results[precision] = {
                "not_applicable": f"n/a on this hardware ({opt.host.cls}): " + (reasons or why)
            }
        else:
            results[precision] = {"unavailable": why}
    return results


def _drift_json(opt: Any) -> dict[str, Any]:
    """``drift.json``: per-face cosine of every engine that ran, against the reference."""
    engines = {
        c.candidate.label: {
            "info": c.info,
            "status": c.status,
            **c.drift.to_dict(),
            "per_face": c.drift.per_face,
            "held_out_min": c.held_out.min,
        }
        for c in opt.ran()
    }
    drift = {
        "images": opt.data["images"],
        "held_out_images": opt.data["held_out"],
        "data_kind": opt.data["images_kind"],
        "engines": engines,
    }
    if len(opt.images):
        drift["thumbnails"] = _worst_thumbnails(engines, opt.images)
    return drift


#: How many of each engine's worst-drift faces the report shows, and at most in all.
WORST_FACES = 4
WORST_FACES_TOTAL = 8


def _worst_thumbnails(engines: dict[str, Any], images: Any) -> dict[str, str]:
    """Base64 PNGs of each engine's lowest-cosine faces, by row index.

    At most :data:`WORST_FACES_TOTAL`, those with the lowest cosine on any engine first,
    so a run of many engines keeps its report small.
    """
    from arcface_lab.report.faces import png_base64

    worst: dict[int, float] = {}
    for e in engines.values():
        per_face = [float(c) for c in e.get("per_face", ())]
        for i in sorted(range(len(per_face)), key=lambda i: per_face[i])[:WORST_FACES]:
            worst[i] = min(worst.get(i, 1.0), per_face[i])
    rows = sorted(worst, key=lambda i: worst[i])[:WORST_FACES_TOTAL]
    return {str(i): png_base64(images[i]) for i in sorted(rows)}


def _verification_json(params: Params, opt: Any) -> dict[str, Any]:
    """``verification.json``: 10-fold results per engine, with per-pair scores for plots."""
    from arcface_lab.core.metrics import pair_scores
    from arcface_lab.measure.bench import pair_embeddings

    ref_scores = pair_scores(*pair_embeddings(opt.reference.outputs)).tolist()
    engines = {
        c.candidate.label: {
            "info": c.info,
            "status": c.status,
            **(c.verification or {}),
            "reference_scores": ref_scores,
            "engine_scores": pair_scores(*pair_embeddings(c.outputs)).tolist(),
            "same": opt.same.tolist(),
        }
        for c in opt.ran()
    }
    out = {
        "pairs": opt.data["pairs"],
        "data_kind": opt.data["pairs_kind"],
        "source": opt.data["pairs_source"],
        "flip": params.data.flip,
        "engines": engines,
    }
    if opt.chosen is not None:
        out["switching"] = _switching_on_pairs(params, opt)
    return out


def _switching_on_pairs(params: Params, opt: Any) -> dict[str, Any]:
    """The chosen engine's probes against the reference's gallery on the run's pairs: the
    reference's operating thresholds applied, and the re-enrolment verdict of
    ``params.reenrolment`` (1:1 only; a pairs file has no gallery to search)."""
    from arcface_lab.core.lowfar import compare_pair_list
    from arcface_lab.core.metrics import pair_scores
    from arcface_lab.measure.acceptance import reenrolment
    from arcface_lab.measure.bench import pair_embeddings

    ref_a, ref_b = pair_embeddings(opt.reference.outputs)
    chosen = opt.chosen
    _, cand_b = pair_embeddings(chosen.outputs)
    mixed = compare_pair_list(
        pair_scores(ref_a, ref_b), pair_scores(ref_a, cand_b), opt.same, params.reenrolment.fars
    )
    limits = dataclasses.replace(params.reenrolment, fpirs=())
    return {
        "engine": chosen.candidate.label,
        "mixed": mixed,
        "reenrolment": reenrolment(mixed, None, limits),
    }


def _bench_json(opt: Any) -> dict[str, Any]:
    """``bench.json``: the reference's records (marked ``reference``), then each engine's."""
    return {"records": [*opt.reference.records, *(r for c in opt.ran() for r in c.records)]}


def _verdict_json(
    params: Params, opt: Any, device: str, scale: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Check]]:
    """``verdict.json`` and its checks: the gates per precision, the class speed target,
    and the scale section's TAR delta when the params set one."""
    from arcface_lab.runs.at_scale import scale_check

    results = _per_precision(params, opt)
    checks = evaluate(results, params.thresholds)
    checks.append(opt.speed_check(params.thresholds))
    row = scale_check(scale, params) if scale is not None else None
    if row is not None:
        checks.append(row)
    verdict = {
        "passed": verdict_passed(checks),
        "checks": [c.to_dict() for c in checks],
        "results": results,
        "hardware_class": opt.host.cls,
        "chosen": opt.to_dict()["chosen"],
        "target_note": params.thresholds.target_note,
        "device": device,
    }
    return verdict, checks


def _face_specs(params: Params) -> Any:
    """The run's resolver of ``faces:`` data (None when it has none): optimize aligns the
    photos through it, and the alignment check reads them back from it."""
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.models.faces import FACES_PREFIX, FaceSpecs

    d = params.data
    if not any(s.startswith(FACES_PREFIX) for s in (d.images, d.held_out, d.pairs)):
        return None
    return FaceSpecs(params.faces, default_cache_root())


def _alignment_json(params: Params, model: Any, faces: Any) -> dict[str, Any]:
    """``alignment.json``: how steady the run's real faces are. Every photo's faces,
    aligned again by the same detector, their landmarks against where the first
    alignment put them and their embeddings through the reference (FP32) against the
    first alignment's."""
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.measure.optimize import reference_backend
    from arcface_lab.runs.faces import alignment_check

    aligned = faces.everything()
    backend = reference_backend(model, params.backends.reference)
    t0 = time.perf_counter()
    with create_engine(
        backend, model, precision="fp32", strict=True, batch_size=params.backends.batch_size
    ) as engine:
        check = alignment_check(
            aligned.faces, faces.finder, engine, params.faces.realign, aligned.landmarks()
        )
    check["seconds"] = round(time.perf_counter() - t0, 2)
    per_photo = {p.photo: sum(f.index is not None for f in p.faces) for p in aligned.photos}
    return {"realign": check, "faces_per_photo": per_photo, "aligned": aligned.to_dict()}


def _measure(params: Params, folder: RunFolder) -> RunResult:
    """Optimize, then write the run files in the order of ``run_folder.MEASURED``."""
    from arcface_lab.measure.optimize import optimize
    from arcface_lab.models.source import resolve_model

    m = params.model
    model = resolve_model(m.spec, arch=m.arch, preprocess=m.overrides(), seed=m.seed)
    env = environment(params, model)
    folder.write("environment", env, default=json_default)
    faces = _face_specs(params)
    opt = optimize(model, params, workdir=folder.path, faces=faces)
    dims = {a.shape[-1] for a in opt.reference.outputs.values() if getattr(a, "ndim", 0) == 2}
    if len(dims) == 1:  # what the reference embedded, for the report's headline
        env["model"]["embedding_dim"] = int(dims.pop())
        folder.write("environment", env, default=json_default)
    opt.write(folder.path)
    folder.write("drift", _drift_json(opt), default=json_default)
    folder.write("verification", _verification_json(params, opt), default=json_default)
    folder.write("bench", _bench_json(opt), default=json_default)
    if faces is not None and faces.aligned:
        print("  alignment: every real face aligned again ...", file=sys.stderr, flush=True)
        folder.write("alignment", _alignment_json(params, model, faces), default=json_default)
    scale = None
    if params.scale.faces:
        from arcface_lab.runs.at_scale import scale_json

        print(
            f"  scale: {params.scale.faces} labelled synthetic faces through the reference "
            "and the chosen engine ...",
            file=sys.stderr,
            flush=True,
        )
        threads = opt.host.cpu.threads if opt.host.device == "cpu" else 0
        scale = scale_json(params, model, opt, threads)
        folder.write("scale", scale, default=json_default)
    device = env["gpu"]["name"] if env["gpu"] else env["cpu"]
    verdict, checks = _verdict_json(params, opt, device, scale)
    folder.write("verdict", verdict, default=json_default)
    return RunResult(folder.path, checks, device, opt.to_dict())


@contextlib.contextmanager
def _claimed(final: Path) -> Iterator[RunFolder]:
    """The in-progress folder of ``final`` (``.<name>.partial``), owned by this run alone.

    A lock beside it (``.<name>.lock``, held for the whole run) refuses a second run on
    the same folder at once, without touching the first; a ``.partial`` left by a run
    that was killed is swept, since no live run holds its lock.
    """
    from filelock import FileLock, Timeout

    if final.exists():
        raise InputError(
            f"out_dir {final}: already exists; runs are never overwritten", argument="out_dir"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final.with_name(f".{final.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(
            f"out_dir {final}: another run is writing it now (lock {lock.lock_file})",
            argument="out_dir",
        ) from None
    try:
        if final.exists():  # finished while we waited for nothing: still never overwritten
            raise InputError(
                f"out_dir {final}: already exists; runs are never overwritten", argument="out_dir"
            )
        partial = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
        if partial.exists():
            log.warning("removing %s, left by a run that was stopped", partial)
            shutil.rmtree(partial)
        partial.mkdir()
        yield RunFolder(partial)
    finally:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


def _render(params: Params, folder: RunFolder, notebooks_dir: Path | None) -> float:
    """Execute the notebooks against ``folder``; return the seconds it took."""
    from arcface_lab.report.notebooks import execute

    source = Path(params.source)
    started = time.perf_counter()
    execute(
        folder.path,
        params_file=str(source.resolve()) if source.is_file() else "",
        notebooks_dir=notebooks_dir,
    )
    return time.perf_counter() - started


def _failed(folder: RunFolder, final: Path, exc: BaseException) -> Path:
    """Record ``exc`` in the folder, render what there is, and keep it as ``<name>.failed``."""
    from arcface_lab.report.html import render as render_index

    folder.write(
        "error", {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    )
    try:
        render_index(folder.path)  # the page says the run failed and links what was rendered
    except Exception as render_exc:
        log.warning("no index.html for the failed run: %s", render_exc)
    failed, n = final.with_name(f"{final.name}.failed"), 1
    while failed.exists():  # an earlier failed run of the same name is kept too
        n += 1
        failed = final.with_name(f"{final.name}.failed-{n}")
    os.replace(folder.path, failed)
    return failed


def run(
    params: Params,
    out_dir: Path | None = None,
    reports_root: Path = Path("reports"),
    render: bool = True,
    notebooks_dir: Path | None = None,
) -> RunResult:
    """Measure ``params``, write the run folder and its HTML; return the verdict.

    With ``render`` the notebooks (``notebooks_dir``, default the repository's
    ``notebooks/``) are executed against the run folder with papermill and
    turned into HTML pages; papermill and nbconvert are checked for before
    anything is measured. Without it only the JSON and ``index.html`` are
    written (a measurement machine with just torch; render elsewhere later).
    A failing notebook fails the run: its error notebook stays in the
    ``.failed`` folder and ``index.html`` says so. A second run on the same
    ``out_dir`` while this one runs is refused at once.
    """
    from arcface_lab.report.html import render as render_index

    check_params(params)
    if render:
        from arcface_lab.report.notebooks import notebook_paths, require

        require()
        notebook_paths(notebooks_dir)  # fails now, not after the measurement
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    final = Path(out_dir) if out_dir else Path(reports_root) / f"{stamp}-{params.name}"
    with _claimed(final) as folder:
        started = time.perf_counter()
        try:
            result = _measure(params, folder)
            timing = {"wall_s": time.perf_counter() - started}
            folder.write("timing", timing)
            if render:
                folder.write(
                    "timing", {**timing, "render_s": _render(params, folder, notebooks_dir)}
                )
            render_index(folder.path)
        except BaseException as exc:
            failed = _failed(folder, final, exc)
            print(f"run failed; partial results in {failed}", file=sys.stderr)
            raise
        os.replace(folder.path, final)
    result.run_dir = final
    return result
