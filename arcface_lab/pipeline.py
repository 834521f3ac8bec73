"""A run: measure, check against the params' thresholds, write a run folder.

Each step is a plain function writing JSON into the run folder
(``environment.json``, ``drift.json``, ``verification.json``, ``bench.json``,
``verdict.json``), then :mod:`arcface_lab.report` renders ``index.html`` from
that JSON alone. The folder is written as ``.<run-id>.partial`` and renamed
when complete; a run that fails is renamed ``<run-id>.failed`` with
``error.json``, so an earlier run is never overwritten and a half-written
folder is never taken for a finished one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import resource
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab import __version__
from arcface_lab.acceptance import Check, evaluate, matrix_row
from arcface_lab.bench import measure
from arcface_lab.data import Preprocess, load_images, synthetic_faces
from arcface_lab.errors import BackendUnavailable, InputError
from arcface_lab.params import Params

__all__ = ["RunResult", "environment", "run"]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    checks: list[Check] = field(default_factory=list)
    device: str = "cpu"

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def summary_text(self) -> str:
        rows = [f"{'metric':<32} {'target':<12} {'measured':<14} verdict"]
        for c in self.checks:
            measured = "n/a" if c.measured is None else f"{c.measured:.6g}"
            verdict = "pass" if c.passed else f"FAIL {c.note}".rstrip()
            rows.append(f"{c.metric:<32} {c.target:<12} {measured:<14} {verdict}")
        rows.append(f"verdict: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(rows)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "arcface_lab": __version__}
    for dist in ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(params: Params, model: Any) -> dict[str, Any]:
    """Where and with what a run was measured."""
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "versions": _versions(),
        "model": model.describe(),
        "params_file": params.source,
        "params": params.to_dict(),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        if torch.cuda.is_available():
            env["gpu"] = {
                "name": torch.cuda.get_device_name(0),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                "cuda": torch.version.cuda,
            }
    except ImportError:
        pass
    return env


def _images(spec: str, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    if spec.startswith("synthetic"):
        n = spec.partition(":")[2] or "64"
        if not n.isdigit():
            raise InputError(f"data.images {spec!r}: expected synthetic:N or a path")
        return synthetic_faces(int(n), seed=7, size=size), "synthetic"
    return load_images(spec, size), "files"


def _write(run_dir: Path, name: str, payload: Any) -> None:
    (run_dir / name).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _embed_pairs(engine: Any, pairs: Any, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    from arcface_lab.validate import flip_sum, mirror

    def emb(images: np.ndarray) -> np.ndarray:
        plain = engine.embed(images)
        return flip_sum(plain, engine.embed(mirror(images))) if flip else plain

    return emb(pairs.images_a), emb(pairs.images_b)


def _bench(engine: Any, images: np.ndarray, params: Params) -> dict[int, Any]:
    b = params.bench
    sync = None
    if engine.info.device.startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize
    out = {}
    for size in b.batch_sizes:
        batch = np.resize(images, (size, *images.shape[1:])) if len(images) < size else images
        out[size] = measure(
            functools.partial(engine.embed, batch[:size], batch_size=size),
            size,
            warmup_s=b.warmup_s,
            budget_s=b.budget_s,
            min_repeats=b.min_repeats,
            target_cov=b.target_cov,
            sync=sync,
        )
    return out


def _measure(params: Params, run_dir: Path) -> RunResult:
    from arcface_lab.models.source import resolve_model
    from arcface_lab.pairs import load_pairs
    from arcface_lab.registry import create_engine
    from arcface_lab.validate import compare_verification, cosine_drift

    m = params.model
    pre = Preprocess(mean=m.mean, std=m.std, bgr=m.bgr, layout=m.layout, size=m.size)
    model = resolve_model(m.spec, arch=m.arch, preprocess=pre, seed=m.seed)
    env = environment(params, model)
    _write(run_dir, "environment.json", env)

    images, image_kind = _images(params.data.images, model.preprocess.size)
    pairs = load_pairs(params.data.pairs, model.preprocess.size)
    be = params.backends
    opts: dict[str, Any] = {"batch_size": be.batch_size, "backend_options": be.options}

    log.info("reference: %s", be.reference)
    reference = create_engine(be.reference, model, precision="fp32", strict=True, **opts)
    ref_images = reference.embed(images)
    ref_pairs = _embed_pairs(reference, pairs, params.data.flip)
    ref_timing = _bench(reference, images, params)

    results: dict[str, dict[str, Any]] = {}
    drift_out: dict[str, Any] = {"images": len(images), "data_kind": image_kind, "engines": {}}
    ver_out: dict[str, Any] = {
        "pairs": pairs.n_pairs,
        "data_kind": pairs.kind,
        "source": pairs.source,
        "flip": params.data.flip,
        "engines": {},
    }
    bench_out: dict[str, Any] = {"records": []}
    bench_out["records"] += _bench_records(reference, ref_timing, ref_timing)

    for precision in be.precisions:
        log.info("precision %s: chain %s", precision, ",".join(be.chain))
        try:
            engine = create_engine(be.chain, model, precision=precision, strict=be.strict, **opts)
        except BackendUnavailable as exc:
            if be.strict:
                raise
            log.warning("precision %s: %s", precision, exc)
            results[precision] = {"unavailable": str(exc)}
            continue
        with engine:
            drift = cosine_drift(ref_images, engine.embed(images))
            verification = compare_verification(
                *ref_pairs, *_embed_pairs(engine, pairs, params.data.flip), pairs.same
            )
            timing = _bench(engine, images, params)
            info = engine.info.to_dict()
        records = _bench_records(engine, timing, ref_timing)
        bench_out["records"] += records
        key = f"{info['backend']}/{precision}"
        drift_out["engines"][key] = {"info": info, **drift.to_dict(), "per_face": drift.per_face}
        ver_out["engines"][key] = {"info": info, **verification}
        results[precision] = {
            "backend": info["backend"],
            "drift": drift.to_dict(),
            "verification": verification,
            "speedup": {r["batch_size"]: r["speedup_vs_reference"] for r in records},
            "peak_vram_mb": None,
        }

    _write(run_dir, "drift.json", drift_out)
    _write(run_dir, "verification.json", ver_out)
    bench_out["process_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write(run_dir, "bench.json", bench_out)
    checks = evaluate(results, params.thresholds)
    device = env["gpu"]["name"] if env["gpu"] else env["cpu"]
    verdict = {
        "passed": bool(checks) and all(c.passed for c in checks),
        "checks": [c.to_dict() for c in checks],
        "results": results,
        "target_note": params.thresholds.target_note,
        "matrix_row": matrix_row(params.name, device, checks),
    }
    _write(run_dir, "verdict.json", verdict)
    return RunResult(run_dir, checks, device)


def _bench_records(engine: Any, timing: dict[int, Any], ref: dict[int, Any]) -> list[dict]:
    info = engine.info
    return [
        {
            "backend": info.backend,
            "precision": info.precision,
            "batch_size": size,
            "latency_ms": {"median": t.median_ms, "p90": t.p90_ms, "p99": t.p99_ms},
            "throughput_ips": t.throughput_ips,
            "cov": t.cov,
            "stable": t.stable,
            "repeats": t.repeats,
            "speedup_vs_reference": ref[size].median_ms / t.median_ms,
            "device": info.device,
        }
        for size, t in timing.items()
    ]


def run(
    params: Params, out_dir: Path | None = None, reports_root: Path = Path("reports")
) -> RunResult:
    """Measure ``params``, write the run folder and its HTML; return the verdict."""
    from arcface_lab.report import render

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    final = Path(out_dir) if out_dir else Path(reports_root) / f"{stamp}-{params.name}"
    if final.exists():
        raise InputError(f"--out {final}: already exists; runs are never overwritten")
    partial = final.with_name(f".{final.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    try:
        result = _measure(params, partial)
        _write(partial, "timing.json", {"wall_s": time.perf_counter() - started})
        render(partial)
    except BaseException as exc:
        _write(
            partial,
            "error.json",
            {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
        )
        failed = final.with_name(final.name + ".failed")
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(partial, failed)
        print(f"run failed; partial results in {failed}", file=sys.stderr)
        raise
    os.replace(partial, final)
    result.run_dir = final
    return result
