"""Timing harness: warm-up by time, repeats until stable or out of budget.

Like trtexec: warm up for ``warmup_s``, then time repeats until the
coefficient of variation (std / mean) of the latencies drops under
``target_cov`` (after at least ``min_repeats``) or ``budget_s`` runs out.
The CoV is reported either way and an unstable measurement is flagged, never
hidden. Speedups are ratios of medians measured in the same run on the same inputs.
GPU work is synchronized before each clock read by the ``sync`` callback.

Each engine is measured in a process of its own (:func:`run_worker`), so
peak memory (RSS on CPU; on CUDA NVML's per-process usage, which includes
the CUDA context, and PyTorch's own peak) is that engine's alone, and thread
settings are made once at process start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab.core.files import write_json_atomic
from arcface_lab.core.host import die_with_parent, reset_rss_high_water, rss_high_water_mb
from arcface_lab.core.progress import PROGRESS_ENV
from arcface_lab.core.speed import timing_interval
from arcface_lab.errors import (
    ArcfaceLabError,
    EngineError,
    WorkerTimeout,
    error_from_record,
    error_record,
)

if TYPE_CHECKING:
    from arcface_lab.config.params import Params
    from arcface_lab.data.pairs import PairSet

__all__ = [
    "BenchSpec",
    "Timing",
    "bench_records",
    "comparison_batch",
    "measure",
    "pair_arrays",
    "pair_embeddings",
    "run_worker",
    "saved_inputs",
    "spec_from_params",
    "summarize",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one engine at one batch size (milliseconds)."""

    batch_size: int
    repeats: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    cov: float
    stable: bool
    warmup_runs: int
    #: Every timed repeat, in order (what a speedup's interval is computed from).
    samples_ms: tuple[float, ...] = ()

    @property
    def throughput_ips(self) -> float:
        """Images per second at the median latency."""
        return self.batch_size / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, float | int | bool]:
        d = asdict(self)
        d["throughput_ips"] = self.throughput_ips
        return d


def summarize(
    latencies_s: list[float] | np.ndarray, batch_size: int, target_cov: float, warmup_runs: int = 0
) -> Timing:
    """Statistics of measured latencies (seconds in, milliseconds out)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("summarize: no latencies measured")
    mean = float(ms.mean())
    cov = float(ms.std() / mean) if ms.size > 1 and mean > 0 else 0.0
    return Timing(
        batch_size=batch_size,
        repeats=int(ms.size),
        median_ms=float(np.median(ms)),
        mean_ms=mean,
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        min_ms=float(ms.min()),
        cov=cov,
        stable=cov <= target_cov,
        warmup_runs=warmup_runs,
        samples_ms=tuple(round(float(v), 4) for v in ms),
    )


def measure(
    run: Callable[[], object],
    batch_size: int,
    warmup_s: float = 1.0,
    budget_s: float = 10.0,
    min_repeats: int = 3,
    target_cov: float = 0.025,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``run()`` (one batch) until its latencies are stable or ``budget_s`` is spent."""
    sync = sync or (lambda: None)
    warmup_runs = 0
    start = clock()
    while True:  # at least one warm-up run, then until warmup_s has passed
        run()
        sync()
        warmup_runs += 1
        if clock() - start >= warmup_s:
            break
    latencies: list[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        sync()
        latencies.append(clock() - t0)
        n = len(latencies)
        if n >= min_repeats:
            arr = np.asarray(latencies)
            if arr.std() / arr.mean() <= target_cov or clock() - start >= budget_s:
                break
    timing = summarize(latencies, batch_size, target_cov, warmup_runs)
    if not timing.stable:
        log.warning(
            "unstable timing at batch %d: CoV %.1f%% over %d repeats (target %.1f%%)",
            batch_size,
            100 * timing.cov,
            timing.repeats,
            100 * target_cov,
        )
    return timing


# -- one backend per subprocess --------------------------------------------------------------


@dataclass(frozen=True)
class BenchSpec:
    """Everything a worker process needs to build one engine, embed and time it (JSON-able).

    Args:
        backend: a backend or a chain (``"openvino,onnxruntime,torch"``); the worker records
            the fallbacks it took in ``info``.
        images: path of a uint8 ``(N, H, W, 3)`` ``.npy``: embedded once, and the faces
            every batch size is timed on.
        inputs: more named uint8 ``.npy`` paths to embed (pairs, held-out faces); their
            embeddings come back under the same names.
        strict: no fallback, and a store that fails raises instead of warning.
        options: options for every backend of the chain; ``backend_options`` per backend.
        recreate: create the engine a second time over the same store after timing, and
            report that creation (``result["second"]``): what a second run costs.
    """

    model: str
    backend: str
    precision: str
    batch_sizes: tuple[int, ...]
    images: str
    preprocess: dict[str, Any]
    arch: str | None = None
    seed: int = 0
    device: str | None = None
    batch_size: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    strict: bool = True
    recreate: bool = False
    warmup_s: float = 1.0
    budget_s: float = 10.0
    min_repeats: int = 3
    target_cov: float = 0.025
    threads: int = 0
    #: At ``speed_batch`` (the batch a speedup is judged at) at least ``speed_repeats``
    #: timed repeats, so the speedup's interval is narrow enough to judge by.
    speed_batch: int = 0
    speed_repeats: int = 0
    #: Above 0: before embedding anything, time :data:`PROBE_RUNS` batches at
    #: ``speed_batch`` (after one warm-up) and stop there when even the fastest took
    #: longer than this: the engine cannot win (``result["cannot_win"]``).
    give_up_ms: float = 0.0
    #: Embeddings through the engine store (optimize's reference: the same model, faces
    #: and runtime give the same embeddings, and only its timing must be of this run).
    #: Keyed by the model's sha256, backend, precision, options, versions, threads,
    #: preprocessing, device and each input's sha256; ``result["embeddings"]`` says
    #: which were stored before.
    reuse_embeddings: bool = False


def comparison_batch(params: Params) -> int:
    """The batch speedups are judged at: ``thresholds.speedup_batch`` when it is timed, else
    the largest batch timed."""
    sizes = params.bench.batch_sizes
    batch = params.thresholds.speedup_batch
    return batch if batch in sizes else max(sizes)


def spec_from_params(
    params: Params,
    backend: str,
    precision: str,
    inputs: Mapping[str, Path],
    **fields: Any,
) -> BenchSpec:
    """A :class:`BenchSpec` for ``params``' model and timing settings.

    ``inputs`` are the arrays to embed (from :func:`saved_inputs`; ``"images"`` is also
    what is timed); ``fields`` set or override any other field.
    """
    m, b = params.model, params.bench
    values: dict[str, Any] = {
        "model": m.spec,
        "arch": m.arch,
        "seed": m.seed,
        "preprocess": m.preprocess().to_dict(),
        "backend": backend,
        "precision": precision,
        "batch_sizes": b.batch_sizes,
        "batch_size": params.backends.batch_size,
        "images": str(inputs["images"]),
        "inputs": {k: str(v) for k, v in inputs.items() if k != "images"},
        "warmup_s": b.warmup_s,
        "budget_s": b.budget_s,
        "min_repeats": b.min_repeats,
        "target_cov": b.target_cov,
        "speed_batch": comparison_batch(params),
        "speed_repeats": b.speed_repeats,
    }
    values.update(fields)
    return BenchSpec(**values)


def pair_arrays(pairs: PairSet, flip: bool) -> dict[str, np.ndarray]:
    """Verification pairs as worker inputs, with their mirror images for flip TTA."""
    from arcface_lab.core.metrics import mirror

    arrays = {"pairs_a": pairs.images_a, "pairs_b": pairs.images_b}
    if flip:
        arrays.update(pairs_a_flip=mirror(pairs.images_a), pairs_b_flip=mirror(pairs.images_b))
    return arrays


def pair_embeddings(out: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs' embeddings from a worker's outputs, flip-summed where mirrors were embedded."""
    from arcface_lab.core.metrics import flip_sum

    def side(name: str) -> np.ndarray:
        mirrored = out.get(f"{name}_flip")
        return out[name] if mirrored is None else flip_sum(out[name], mirrored)

    return side("pairs_a"), side("pairs_b")


@contextlib.contextmanager
def saved_inputs(arrays: Mapping[str, np.ndarray], folder: Path) -> Iterator[dict[str, Path]]:
    """``arrays`` written as hidden ``.npy`` files in ``folder`` for workers; removed after."""
    paths = {name: Path(folder) / f".bench-{name}.npy" for name in arrays}
    try:
        for name, array in arrays.items():
            np.save(paths[name], array)
        yield paths
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)


def _peak_memory(device: str, inference_rss_mb: float | None) -> dict[str, Any]:
    """Peak memory of this process: RSS on CPU; on CUDA what the device says, and torch's view.

    ``peak_rss_mb`` covers the whole process (model preparation and engine build
    included); ``inference_rss_mb``, where Linux can reset the high-water mark, only
    what the process held while the built engine embedded and was timed.

    On CUDA the figure checked against a VRAM target must include the CUDA context and
    memory that torch's allocator never sees (ONNX Runtime's arena, TensorRT's
    workspace), so it is NVML's usage of this process, or where NVML cannot name it
    (no pynvml, or a PID namespace as in most containers) the device's used memory from
    ``cudaMemGetInfo`` (which also counts other processes on that GPU). Both are read at
    the end of timing; caching allocators keep their peak, so it is close to the peak.
    torch's own peak counters (reset after the engine was built) are kept beside it.
    """
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out: dict[str, Any] = {
        "peak_rss_mb": rss_mb,
        "inference_rss_mb": inference_rss_mb,
        "memory_kind": "rss",
        "peak_memory_mb": inference_rss_mb if inference_rss_mb is not None else rss_mb,
        "peak_memory_source": (
            "RSS high-water mark while embedding and timing (engine loaded)"
            if inference_rss_mb is not None
            else "process peak RSS (build included)"
        ),
    }
    if not device.startswith("cuda"):
        return out
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    free, total = torch.cuda.mem_get_info(index)
    out.update(
        memory_kind="vram",
        cuda_device=index,
        torch_max_allocated_mb=torch.cuda.max_memory_allocated(index) / 2**20,
        torch_max_reserved_mb=torch.cuda.max_memory_reserved(index) / 2**20,
        device_used_mb=(total - free) / 2**20,
        device_total_mb=total / 2**20,
        peak_memory_mb=(total - free) / 2**20,
        peak_memory_source="device memory in use at the end of timing (cudaMemGetInfo: "
        "includes the CUDA context, and any other process on this GPU)",
    )
    nvml_mb, error = _nvml_process_mb(torch.cuda.get_device_properties(index))
    if nvml_mb is not None:
        out["nvml_process_mb"] = nvml_mb
        out["peak_memory_mb"] = nvml_mb
        out["peak_memory_source"] = (
            "NVML usage of this process at the end of timing (includes the CUDA context)"
        )
    else:
        out["nvml_error"] = error
    return out


def _nvml_process_mb(props: Any) -> tuple[float | None, str | None]:
    """This process's memory on the GPU ``props`` describes, from NVML; or why not.

    The GPU is found by UUID (else PCI bus id), never by index: NVML ignores
    ``CUDA_VISIBLE_DEVICES``, so torch's device 0 may be NVML's device 3.
    """
    try:
        import pynvml
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver access
        return None, f"nvmlInit failed: {type(exc).__name__}: {exc}"
    try:
        uuid = str(getattr(props, "uuid", "") or "")
        if uuid:
            handle = pynvml.nvmlDeviceGetHandleByUUID(
                uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
            )
        elif getattr(props, "pci_bus_id", None) is not None:
            bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
            handle = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        else:
            return None, "this torch reports neither the GPU's UUID nor its PCI bus id"
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return proc.usedGpuMemory / 2**20, None
        return None, "this process is not in NVML's list (a PID namespace, as in most containers?)"
    except Exception as exc:  # NVML refuses or lacks a call: say so, never guess
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _worker(spec: BenchSpec, out_dir: Path) -> None:
    """Build ``spec``'s engine, embed the images and inputs once, time every batch size."""
    from arcface_lab.core.preprocess import Preprocess
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.models.source import resolve_model
    from arcface_lab.store import open_store

    if spec.threads:
        import torch

        torch.set_num_threads(spec.threads)  # once, before any work
    pre = Preprocess.from_dict(spec.preprocess)
    model = resolve_model(spec.model, arch=spec.arch, preprocess=pre, seed=spec.seed)
    images = np.load(spec.images, allow_pickle=False)
    store = open_store(**{"strict": spec.strict, **spec.store})
    t0 = time.perf_counter()
    model.sha256()  # the model source read (weights hashed, seeded ones made) before timing
    prepare_s = time.perf_counter() - t0

    def create() -> tuple[Any, float]:
        t0 = time.perf_counter()
        engine = create_engine(
            spec.backend,
            model,
            precision=spec.precision,
            strict=spec.strict,
            backend_options=spec.backend_options,
            device=spec.device,
            batch_size=max(spec.batch_size, *spec.batch_sizes),
            store=store,
            **spec.options,
        )
        return engine, time.perf_counter() - t0

    engine, setup_s = create()
    reset = reset_rss_high_water()
    if engine.info.device.startswith("cuda"):  # the peak of inference, not of the build
        import torch

        torch.cuda.reset_peak_memory_stats(torch.device(engine.info.device))
    phases = {"prepare": prepare_s, **build_phases(engine.info.details, setup_s)}
    with engine:
        if spec.give_up_ms > 0:
            t0 = time.perf_counter()
            probe = _probe(engine, images, spec.speed_batch or max(spec.batch_sizes))
            phases["probe"] = time.perf_counter() - t0
            if probe["best_ms"] > spec.give_up_ms:
                probe["give_up_ms"] = spec.give_up_ms
                stopped = {
                    "info": engine.info.to_dict(),
                    "prepare_s": prepare_s,
                    "setup_s": setup_s,
                    "phases_s": phases,
                    "cannot_win": probe,
                }
                write_json_atomic(out_dir / "result.json", stopped, default=str)
                return
        t0 = time.perf_counter()
        origins: dict[str, str] = {}

        def embed(name: str, faces: np.ndarray) -> np.ndarray:
            if not spec.reuse_embeddings:
                return np.asarray(engine.embed(faces))
            emb, origins[name] = _stored_embeddings(engine, store, spec, model.sha256(), faces)
            return emb

        np.save(out_dir / "images.npy", embed("images", images))
        for name, path in spec.inputs.items():
            np.save(out_dir / f"{name}.npy", embed(name, np.load(path, allow_pickle=False)))
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        sync = None
        if engine.info.device.startswith("cuda"):
            import torch

            sync = torch.cuda.synchronize
        timings = {}
        for size in spec.batch_sizes:
            batch = np.resize(images, (size, *images.shape[1:]))
            repeats = spec.min_repeats
            if size == spec.speed_batch:
                repeats = max(repeats, spec.speed_repeats)
            timings[size] = measure(
                functools.partial(engine.embed, batch, batch_size=size),
                size,
                warmup_s=spec.warmup_s,
                budget_s=spec.budget_s,
                min_repeats=repeats,
                target_cov=spec.target_cov,
                sync=sync,
            ).to_dict()
        phases.update(embed=embed_s, time=time.perf_counter() - t0)
        result: dict[str, Any] = {
            "info": engine.info.to_dict(),
            "prepare_s": prepare_s,
            "setup_s": setup_s,
            "phases_s": phases,
            "embeddings": origins,
            "timings": timings,
            "memory": _peak_memory(engine.info.device, rss_high_water_mb() if reset else None),
        }
    if spec.recreate:
        again, create_s = create()
        with again:
            result["second"] = {"create_s": create_s, "info": again.info.to_dict()}
    write_json_atomic(out_dir / "result.json", result, default=str)


def _stored_embeddings(
    engine: Any, store: Any, spec: BenchSpec, model_sha256: str, faces: np.ndarray
) -> tuple[np.ndarray, str]:
    """``engine.embed(faces)`` through ``store`` (:attr:`BenchSpec.reuse_embeddings`), and
    where it came from (``built``, ``local``, ``remote``); verified by sha256 before use."""
    from arcface_lab.core.files import array_sha256
    from arcface_lab.store import device_fingerprint

    inputs = {
        "artifact": "embeddings",
        "model_sha256": model_sha256,
        "backend": engine.info.backend,
        "precision": spec.precision,
        "options": spec.options,
        "versions": engine.info.versions,
        "threads": spec.threads,
        "batch_size": engine.batch_size,
        "preprocess": spec.preprocess,
        "device": device_fingerprint(),
        "faces_sha256": array_sha256(faces),
    }

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a handle: np.save would add .npy to the path
            np.save(f, np.asarray(engine.embed(faces), dtype=np.float32))

    art = store.fetch_or_build(inputs, build)
    emb = np.load(art.path, allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] != len(faces):
        raise EngineError(f"{art.path}: stored embeddings of shape {emb.shape}, {len(faces)} faces")
    return emb, art.origin


#: Timed batches of :attr:`BenchSpec.give_up_ms`'s probe (after one warm-up batch).
PROBE_RUNS = 3


def _probe(engine: Any, images: np.ndarray, size: int) -> dict[str, Any]:
    """The fastest of :data:`PROBE_RUNS` batches of ``size`` faces: the engine's best case."""
    batch = np.resize(images, (size, *images.shape[1:]))
    engine.embed(batch, batch_size=size)  # warm-up
    runs = []
    for _ in range(PROBE_RUNS):
        t0 = time.perf_counter()
        engine.embed(batch, batch_size=size)
        runs.append((time.perf_counter() - t0) * 1e3)
    return {"batch": size, "best_ms": min(runs), "runs_ms": runs}


#: A worker's phases, in order (seconds each, in ``result["phases_s"]``): the model read
#: or made, the engine's creation split into what its details say it spent converting
#: (``convert_s``: ncnn, MNN), calibrating INT8 and what follows it (``calibration_s``,
#: ``search_s``: OpenVINO's gates of both ends, sensitivity and selection; zero when the
#: store had the artifact) and the rest of the build,
#: the probe of a candidate that may not win (:attr:`BenchSpec.give_up_ms`), then
#: embedding every input and timing every batch size.
PHASES = ("prepare", "convert", "calibrate", "search", "build", "probe", "embed", "time")


def build_phases(details: Mapping[str, Any], setup_s: float) -> dict[str, float]:
    """An engine creation's ``setup_s`` split by the parts its ``details`` report."""
    parts = {
        "convert": float(details.get("convert_s") or 0.0),
        "calibrate": float(details.get("calibration_s") or 0.0),
        "search": float(details.get("search_s") or 0.0),
    }
    parts = {k: v for k, v in parts.items() if v > 0}
    return {**parts, "build": max(setup_s - sum(parts.values()), 0.0)}


#: Worker folders are ``<tmp>/arcface-bench-<parent pid>-<random>``.
WORKER_PREFIX = "arcface-bench-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_worker_folders(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the worker folders of runs that were killed (their parent process is gone)."""
    import shutil

    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{WORKER_PREFIX}*-*"):
        pid = folder.name[len(WORKER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


#: The bench workers this process is waiting on, from whichever thread started them.
_live_workers: set[subprocess.Popen[str]] = set()
_live_lock = threading.Lock()


def start_worker(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a worker process in its own process group, dying with this process.

    The group lets :func:`kill_worker` stop what the worker itself started (a compiler,
    a calibration pool): a grandchild still holding the worker's pipes would otherwise
    keep a killed worker's output open, and the wait for it would never end.
    """
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )
    with _live_lock:
        _live_workers.add(proc)
    return proc


def kill_worker(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the worker's whole process group (the worker and everything it started)."""
    import signal

    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()


def wait_worker(proc: subprocess.Popen[str], timeout_s: float, label: str) -> tuple[str, str]:
    """The worker's stdout and stderr once it exits; killed, group and all, past ``timeout_s``.

    Raises:
        WorkerTimeout: it ran past ``timeout_s`` (it is killed first).
    """
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_worker(proc)
        _drain(proc)
        raise WorkerTimeout(f"{label} timed out after {timeout_s:.0f} s", timeout_s) from None
    except BaseException:  # interrupted: the worker goes with the run
        kill_worker(proc)
        _drain(proc)
        raise
    finally:
        with _live_lock:
            _live_workers.discard(proc)


def _drain(proc: subprocess.Popen[str]) -> None:
    """Reap a killed worker; its pipes are not waited on past a few seconds."""
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def stop_workers() -> int:
    """Kill every bench worker this process started and still waits on; return how many.

    A signal reaches only the main thread: a run interrupted there (SIGTERM, Ctrl-C)
    calls this so that a worker waited on by another thread does not outlive it.
    """
    with _live_lock:
        live = [p for p in _live_workers if p.poll() is None]
    for proc in live:
        kill_worker(proc)
    return len(live)


def run_worker(
    spec: BenchSpec, timeout_s: float = 1800, phase_file: Path | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run :func:`_worker` for ``spec`` in a fresh Python process.

    Returns its result and the embeddings: ``"images"`` and one per ``spec.inputs`` name
    (none when its probe found it cannot win: ``result["cannot_win"]``).
    Thread counts (``spec.threads``) are set in the child's environment before it starts;
    ``phase_file`` is where it says what it is doing (:mod:`arcface_lab.core.progress`).
    The child dies with this process (a killed run leaves no worker behind), and worker
    folders of killed runs are swept first.

    Raises:
        ArcfaceLabError: the worker's own error, with its class (an ``InputError`` stays one,
            so the command line still exits 2); ``BackendUnavailable`` when no backend of the
            chain could run.
        EngineError: the worker failed otherwise or ran past ``timeout_s``.
    """
    env = dict(os.environ)
    if spec.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(spec.threads)
    if phase_file is not None:
        env[PROGRESS_ENV] = str(phase_file)
    sweep_worker_folders()
    label = f"bench worker for {spec.backend} ({spec.precision})"
    with tempfile.TemporaryDirectory(prefix=f"{WORKER_PREFIX}{os.getpid()}-") as tmp:
        write_json_atomic(Path(tmp) / "spec.json", asdict(spec))
        proc = start_worker([sys.executable, "-m", "arcface_lab.measure.bench", tmp], env)
        _, stderr = wait_worker(proc, timeout_s, label)
        error = Path(tmp) / "error.json"
        if error.is_file():  # an arcface_lab error, raised again here with its own class
            raise error_from_record(json.loads(error.read_text()))
        if proc.returncode != 0:
            tail = "\n".join(stderr.strip().splitlines()[-5:])
            raise EngineError(f"{label} failed:\n{tail}")
        result = json.loads((Path(tmp) / "result.json").read_text())
        if "cannot_win" in result:
            return result, {}  # stopped after its probe: nothing embedded
        names = ["images", *spec.inputs]
        return result, {n: np.load(Path(tmp) / f"{n}.npy", allow_pickle=False) for n in names}


def bench_records(
    result: dict[str, Any], embeddings: np.ndarray, reference: dict[str, Any], ref_emb: np.ndarray
) -> list[dict[str, Any]]:
    """One record per batch size, with speedup and cosine against the reference run."""
    info = result["info"]
    cos = np.sum(embeddings * ref_emb, axis=1) / (
        np.linalg.norm(embeddings, axis=1) * np.linalg.norm(ref_emb, axis=1)
    )
    records = []
    for size, t in result["timings"].items():
        ref_t = reference["timings"].get(size)
        records.append(
            {
                "backend": info["backend"],
                "precision": info["precision"],
                "batch_size": int(size),
                "latency_ms": {"median": t["median_ms"], "p90": t["p90_ms"], "p99": t["p99_ms"]},
                "throughput_ips": t["throughput_ips"],
                "cov": t["cov"],
                "stable": t["stable"],
                "repeats": t["repeats"],
                "speedup_vs_reference": ref_t["median_ms"] / t["median_ms"] if ref_t else None,
                "speedup_ci": timing_interval(ref_t, t),
                "reference_repeats": ref_t["repeats"] if ref_t else None,
                "cosine_min": float(cos.min()),
                "peak_memory_mb": result["memory"]["peak_memory_mb"],
                "memory_kind": result["memory"]["memory_kind"],
                "memory": result["memory"],
                "setup_s": result["setup_s"],
                "artifact": info.get("artifact"),
                "device": info["device"],
                "fallbacks": info["fallbacks"],
                "warnings": info["warnings"],
            }
        )
    return records


if __name__ == "__main__":  # the worker: python -m arcface_lab.measure.bench TMPDIR
    _dir = Path(sys.argv[1])
    _spec = json.loads((_dir / "spec.json").read_text())
    _spec["batch_sizes"] = tuple(_spec["batch_sizes"])
    try:
        _worker(BenchSpec(**_spec), _dir)
    except ArcfaceLabError as _exc:
        write_json_atomic(_dir / "error.json", error_record(_exc))
        sys.exit(1)
