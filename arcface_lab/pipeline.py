"""A run: measure, check against the params' thresholds, write a run folder.

Each step is a plain function writing JSON into the run folder
(``environment.json``, ``drift.json``, ``verification.json``, ``bench.json``,
``verdict.json``), then the notebooks are executed against that folder with
papermill and turned into HTML pages (:mod:`arcface_lab.notebooks`), and
:mod:`arcface_lab.report` renders ``index.html`` from the JSON alone. The
folder is written as ``.<run-id>.partial`` and renamed when complete; a run
that fails (a notebook included) is renamed ``<run-id>.failed`` with
``error.json``, so an earlier run is never overwritten and a half-written
folder is never taken for a finished one.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
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
from arcface_lab.bench import (
    bench_records,
    pair_arrays,
    pair_embeddings,
    run_worker,
    saved_inputs,
    spec_from_params,
)
from arcface_lab.data import images_from_spec
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


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
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
        "cpu": cpu_model(),
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
            props = torch.cuda.get_device_properties(0)
            env["gpu"] = {
                "name": torch.cuda.get_device_name(0),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
                "memory_mb": props.total_memory // 2**20,
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "driver": gpu_driver_version(),
            }
    except ImportError:
        pass
    return env


def gpu_driver_version() -> str | None:
    """The NVIDIA driver version (NVML, else ``nvidia-smi``); None where neither answers."""
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no pynvml, no driver, or not permitted: try the command line
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


def _write(run_dir: Path, name: str, payload: Any) -> None:
    (run_dir / name).write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _bench(
    params: Params, backend: str, precision: str, inputs: dict[str, Path], strict: bool
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Create, embed and time one engine (or the first of a chain) in a process of its own.

    The one creation of the engine: its embeddings of the images and of every
    ``inputs`` array come back with its timings and info, and peak memory is its own.
    """
    st = params.store
    spec = spec_from_params(
        params,
        backend,
        precision,
        inputs,
        backend_options={k: dict(v) for k, v in params.backends.options.items()},
        store={
            "local": st.local,
            "s3": st.s3,
            "s3_endpoint": st.s3_endpoint,
            "strict": params.backends.strict,
        },
        strict=strict,
    )
    log.info("%s %s: in its own process", backend, precision)
    return run_worker(spec)


def _measure(params: Params, run_dir: Path) -> RunResult:
    from arcface_lab.models.source import resolve_model
    from arcface_lab.pairs import load_pairs
    from arcface_lab.validate import compare_verification, cosine_drift, pair_scores

    m = params.model
    model = resolve_model(m.spec, arch=m.arch, preprocess=m.preprocess(), seed=m.seed)
    env = environment(params, model)
    _write(run_dir, "environment.json", env)

    images, image_kind = images_from_spec(params.data.images, model.preprocess.size)
    pairs = load_pairs(params.data.pairs, model.preprocess.size)
    be = params.backends
    arrays = {"images": images, **pair_arrays(pairs, params.data.flip)}
    with saved_inputs(arrays, run_dir) as inputs:
        log.info("reference: %s", be.reference)
        ref_result, ref_out = _bench(params, be.reference, "fp32", inputs, strict=True)
        ref_images, ref_pairs = ref_out["images"], pair_embeddings(ref_out)
        ref_scores = pair_scores(*ref_pairs).tolist()
        ref_records = bench_records(ref_result, ref_images, ref_result, ref_images)

        results: dict[str, dict[str, Any]] = {}
        drift_out: dict[str, Any] = {"images": len(images), "data_kind": image_kind, "engines": {}}
        ver_out: dict[str, Any] = {
            "pairs": pairs.n_pairs,
            "data_kind": pairs.kind,
            "source": pairs.source,
            "flip": params.data.flip,
            "engines": {},
        }
        bench_out: dict[str, Any] = {"records": ref_records}

        chain = ",".join(be.chain)
        for precision in be.precisions:
            log.info("precision %s: chain %s", precision, chain)
            try:
                result, out = _bench(params, chain, precision, inputs, strict=be.strict)
            except BackendUnavailable as exc:
                if be.strict:
                    raise
                log.warning("precision %s: %s", precision, exc)
                results[precision] = {"unavailable": str(exc)}
                continue
            info = result["info"]
            for fallback in info["fallbacks"]:
                log.warning(
                    "precision %s: backend %s skipped: %s",
                    precision,
                    fallback["backend"],
                    fallback["reason"],
                )
            drift = cosine_drift(ref_images, out["images"])
            eng_pairs = pair_embeddings(out)
            verification = compare_verification(*ref_pairs, *eng_pairs, pairs.same)
            records = bench_records(result, out["images"], ref_result, ref_images)
            bench_out["records"] += records
            memory = result["memory"]
            key = f"{info['backend']}/{precision}"
            drift_out["engines"][key] = {
                "info": info,
                **drift.to_dict(),
                "per_face": drift.per_face,
            }
            ver_out["engines"][key] = {
                "info": info,
                **verification,
                # per pair, for the notebooks' score scatter and ROC curves
                "reference_scores": ref_scores,
                "engine_scores": pair_scores(*eng_pairs).tolist(),
                "same": pairs.same.tolist(),
            }
            results[precision] = {
                "backend": info["backend"],
                "drift": drift.to_dict(),
                "verification": verification,
                "speedup": {r["batch_size"]: r["speedup_vs_reference"] for r in records},
                "peak_vram_mb": (
                    memory["peak_memory_mb"] if memory["memory_kind"] == "vram" else None
                ),
                "peak_memory": memory,
            }

    _write(run_dir, "drift.json", drift_out)
    _write(run_dir, "verification.json", ver_out)
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
    ``.failed`` folder and ``index.html`` says so.
    """
    from arcface_lab.report import render as render_index

    if render:
        from arcface_lab.notebooks import notebook_paths, require

        require()
        notebook_paths(notebooks_dir)  # fails now, not after the measurement
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
        timing = {"wall_s": time.perf_counter() - started}
        _write(partial, "timing.json", timing)
        if render:
            from arcface_lab.notebooks import execute

            source = Path(params.source)
            rendered = time.perf_counter()
            execute(
                partial,
                params_file=str(source.resolve()) if source.is_file() else "",
                notebooks_dir=notebooks_dir,
            )
            _write(partial, "timing.json", {**timing, "render_s": time.perf_counter() - rendered})
        render_index(partial)
    except BaseException as exc:
        _write(
            partial,
            "error.json",
            {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
        )
        try:
            render_index(partial)  # the page says the run failed and links what was rendered
        except Exception as render_exc:
            log.warning("no index.html for the failed run: %s", render_exc)
        failed, n = final.with_name(f"{final.name}.failed"), 1
        while failed.exists():  # an earlier failed run of the same name is kept too
            n += 1
            failed = final.with_name(f"{final.name}.failed-{n}")
        os.replace(partial, failed)
        print(f"run failed; partial results in {failed}", file=sys.stderr)
        raise
    os.replace(partial, final)
    result.run_dir = final
    return result
