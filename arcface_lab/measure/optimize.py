"""Optimize: the fastest engine that is still the same model, on the machine at hand.

Like Triton Model Navigator's ``optimize``, judged by face-recognition gates:

1. **Candidates**: every backend of ``backends.chain`` x every precision of
   ``backends.precisions`` it supports x the option sets that matter there
   (:meth:`Engine.candidate_options`, e.g. OpenVINO INT8 with the accuracy-aware
   search and without it). Each is labelled ``native``, ``emulated`` or
   ``unavailable`` on this host by its backend (:meth:`Engine.support`); only native
   ones run unless ``optimize.emulated`` is set. They run fastest-expected first, so
   a small budget still tries the most promising and says what it skipped.
2. **Reference**: torch eager FP32 (ONNX Runtime FP32 for an ``.onnx`` model) in a
   process of its own, measured in this same run.
3. **Each candidate** in a process of its own (:func:`arcface_lab.measure.bench.run_worker`),
   built through the engine store, embeds the validation faces, the held-out faces
   (never used for calibration or gating) and the verification pairs, and is timed at
   the params batch sizes. It is checked against the params gates
   (:func:`arcface_lab.measure.acceptance.gate_checks`): per-face cosine on the validation
   and the held-out faces, accuracy delta and decision flips at the reference's
   thresholds.
4. **Choice**: the candidate with the lowest median latency at the comparison batch
   among those that passed every gate.

The result (:class:`OptimizeResult`) is written as ``optimize.json``: ``host``,
``chosen`` and ``candidates[]`` with each one's status (:data:`STATUSES`) and reason.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab.core.host import Host, probe
from arcface_lab.engines.base import Support
from arcface_lab.engines.registry import check_params
from arcface_lab.errors import ArcfaceLabError, BackendUnavailable, InputError, ParamsError
from arcface_lab.measure.acceptance import Check, gate_checks
from arcface_lab.models.faces import FACES_PREFIX

if TYPE_CHECKING:
    from arcface_lab.config.params import Params
    from arcface_lab.models.source import ModelSource

__all__ = [
    "STATUSES",
    "Candidate",
    "CandidateResult",
    "OptimizeResult",
    "candidates",
    "engine_options",
    "optimize",
    "reference_backend",
]

log = logging.getLogger(__name__)

#: What became of a candidate.
STATUSES = (
    "chosen",  # passed every gate and is the fastest that did
    "passed",  # passed every gate, slower than the chosen one
    "failed_gate",  # ran, and missed a gate (the reason names it)
    "not_native",  # this host only emulates the precision (not run unless optimize.emulated)
    "unavailable",  # the backend cannot run it here (missing library, device, option)
    "error",  # the worker failed
    "cannot_win",  # even its best case is below the best passing one's interval: not timed
    "over_budget",  # not started, or stopped, when optimize.budget_s was spent
)
#: Seed of the held-out faces drawn as ``synthetic:N`` (never the validation faces' seed).
HELD_OUT_SEED = 1234


@dataclass(frozen=True)
class Candidate:
    """One backend x precision x option set, as this host supports it."""

    backend: str
    precision: str
    options: tuple[tuple[str, Any], ...] = ()
    support: Support = field(default_factory=lambda: Support("native"))
    expected_speedup: float = 1.0

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, Any], ...]]:
        """What identifies the engine: backend, precision, options (not how it was planned)."""
        return self.backend, self.precision, self.options

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.backend}/{self.precision}" + (f" ({extra})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "backend": self.backend,
            "precision": self.precision,
            "options": dict(self.options),
            "support": self.support.to_dict(),
            "expected_speedup": self.expected_speedup,
        }


@dataclass
class CandidateResult:
    """What one candidate did: status, reason, gates, speed, and its embeddings."""

    candidate: Candidate
    status: str
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    latency_ms: dict[str, float] | None = None
    speedup_vs_reference: float | None = None
    #: The speedup's 95 % interval (:mod:`arcface_lab.core.speed`), from both samples.
    speedup_ci: tuple[float, float] | None = None
    #: Timed repeats at the comparison batch: ``{"candidate": n, "reference": n}``.
    repeats: dict[str, int] | None = None
    cosine_min: float | None = None
    held_out_cosine_min: float | None = None
    decision_flips: int | None = None
    accuracy_delta: float | None = None
    first_run_s: float | None = None
    info: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    drift: Any = None  # validate.DriftStats of the validation faces
    held_out: Any = None  # validate.DriftStats of the held-out faces
    verification: dict[str, Any] | None = None
    worker: dict[str, Any] | None = None  # the worker's raw result (timings, memory, second)
    outputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Seconds per phase: the worker's (:data:`arcface_lab.measure.bench.PHASES`), ``start``
    #: (the rest of its wall time: interpreter, imports, a second creation under
    #: ``recreate``) and ``gate`` (the comparison with the reference).
    phases_s: dict[str, float] = field(default_factory=dict)
    #: ``cannot_win``: its best case, where it comes from, and what it had to beat.
    best_case: dict[str, Any] | None = None

    @property
    def seconds(self) -> float:
        """What this candidate cost the run (the sum of its phases)."""
        return sum(self.phases_s.values())

    @property
    def ran(self) -> bool:
        return self.latency_ms is not None

    @property
    def passed(self) -> bool:
        return self.status in ("chosen", "passed")

    def to_dict(self) -> dict[str, Any]:
        art = (self.info or {}).get("artifact") or {}
        return {
            **self.candidate.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
            "speedup_vs_reference": self.speedup_vs_reference,
            "speedup_ci": None if self.speedup_ci is None else list(self.speedup_ci),
            "repeats": self.repeats,
            "cosine_min": self.cosine_min,
            "held_out_cosine_min": self.held_out_cosine_min,
            "decision_flips": self.decision_flips,
            "accuracy_delta": self.accuracy_delta,
            "first_run_s": self.first_run_s,
            "artifact": {k: art[k] for k in ("kind", "key", "origin") if k in art} or None,
            "peak_memory": (self.worker or {}).get("memory"),
            "embeddings": (self.worker or {}).get("embeddings") or None,
            "phases_s": {k: round(v, 3) for k, v in self.phases_s.items()},
            "best_case": self.best_case,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class OptimizeResult:
    """Every candidate, the reference they were measured against, and the choice."""

    host: Host
    model: dict[str, Any]
    batch_size: int
    reference: CandidateResult
    candidates: list[CandidateResult]
    budget_s: float
    wall_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    #: Per verification pair: the same person (the pairs' labels, for per-pair plots).
    same: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    #: The reference timed again after the candidates (:func:`_retimed_reference`).
    reference_again: dict[str, Any] = field(default_factory=dict)
    #: The validation faces (uint8 crops), for the report's thumbnails of real faces.
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 112, 112, 3)), repr=False)
    #: Where the run's seconds went: ``inputs`` (faces, pairs), ``reference``,
    #: ``candidates``, ``reference_again``.
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> CandidateResult | None:
        return next((c for c in self.candidates if c.status == "chosen"), None)

    def ran(self) -> list[CandidateResult]:
        return [c for c in self.candidates if c.ran]

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "host": self.host.to_dict(),
            "model": self.model,
            "batch_size": self.batch_size,
            "budget_s": self.budget_s,
            "wall_s": self.wall_s,
            "phases_s": {k: round(v, 3) for k, v in self.phases_s.items()},
            "data": self.data,
            "reference": self.reference.to_dict(),
            "reference_again": self.reference_again,
            "chosen": None if chosen is None else chosen.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
        }

    def write(self, folder: str | Path) -> Path:
        """``folder/optimize.json``, written whole or not at all."""
        from arcface_lab.core.files import write_json_atomic

        path = Path(folder) / "optimize.json"
        write_json_atomic(path, self.to_dict(), default=json_default)
        return path

    def table(self) -> str:
        """Every candidate in one line: status, speed, gates, reason."""
        return "\n".join(candidate_table(self.to_dict()))

    def speed_check(self, thresholds: Any) -> Check:
        """The chosen engine's speedup against this host class's target (``n/a`` if none)."""
        from arcface_lab.measure.acceptance import speed_check

        chosen = self.chosen
        label = chosen.candidate.label if chosen else "chosen engine"
        speedup = chosen.speedup_vs_reference if chosen else None
        interval = chosen.speedup_ci if chosen else None
        return speed_check(label, speedup, self.batch_size, self.host.cls, thresholds, interval)


def json_default(obj: Any) -> Any:
    """``json.dumps`` ``default`` for numpy scalars and arrays (else ``str``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def chosen_line(payload: Mapping[str, Any]) -> str:
    """``optimize.json``'s choice in one line: engine, speedup over the reference, batch."""
    chosen = payload.get("chosen")
    if not chosen:
        return "chosen: none: no candidate passed every gate"
    return (
        f"chosen: {chosen['label']}, {chosen['speedup_vs_reference']:.2f}x "
        f"{payload['reference']['label']} at batch {payload['batch_size']}"
    )


def candidate_table(payload: Mapping[str, Any]) -> list[str]:
    """``optimize.json``'s candidates as text rows (the CLI, ``make report`` and ``make bench``)."""

    from arcface_lab.core.speed import format_interval

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = [
        f"{'candidate':<44} {'status':<12} {'b' + str(payload['batch_size']) + ' ms':>9} "
        f"{'speedup':>8} {'95 % interval':>14} {'cos min':>8} {'held-out':>8} {'flips':>5} "
        f"{'1st s':>6}  reason"
    ]
    for c in payload["candidates"]:
        median = (c.get("latency_ms") or {}).get("median")
        interval = format_interval(c.get("speedup_ci")) or "-"
        rows.append(
            f"{c['label']:<44} {c['status']:<12} {num(median, '.0f'):>9} "
            f"{num(c['speedup_vs_reference'], '.2f'):>8} {interval:>14} "
            f"{num(c['cosine_min'], '.5f'):>8} "
            f"{num(c['held_out_cosine_min'], '.5f'):>8} {num(c['decision_flips'], 'd'):>5} "
            f"{num(c['first_run_s'], '.1f'):>6}  {c['reason']}"
        )
    return rows


# --------------------------------------------------------------------------- candidates


def reference_backend(model: ModelSource | None, preferred: str = "torch") -> str:
    """The reference for ``model``: ``preferred`` (torch), ONNX Runtime FP32 for an ``.onnx``."""
    from arcface_lab.engines.registry import get_backend

    if model is not None and not model.has_torch_module and get_backend(preferred).needs_torch:
        return "onnxruntime"
    return preferred


def candidates(
    params: Params, host: Host | None = None, model: ModelSource | None = None
) -> list[Candidate]:
    """Every candidate of ``params`` on ``host``: runnable ones fastest-expected first."""
    from arcface_lab.engines.registry import get_backend

    host = host or probe()
    out: list[Candidate] = []
    for name in params.backends.chain:
        cls = get_backend(name)
        for precision in params.backends.precisions:
            if precision not in cls.precisions:
                continue  # not a candidate at all: the backend has no such precision
            support = cls.support(precision, host)
            needs_torch = cls.needs_torch and model is not None and not model.has_torch_module
            if support.status != "unavailable" and needs_torch:
                assert model is not None
                support = Support(
                    "unavailable", f"{model.spec} is an ONNX file; {name} runs torch models"
                )
            options = (
                cls.candidate_options(precision, host)
                if support.status != "unavailable"
                else [({}, 0.0)]
            )
            for opts, expected in options:
                out.append(
                    Candidate(name, precision, tuple(sorted(opts.items())), support, expected)
                )
    rank = {"native": 0, "emulated": 1, "unavailable": 2}
    return sorted(out, key=lambda c: (rank[c.support.status], -c.expected_speedup))


def engine_options(
    backend: str, precision: str, params: Params, threads: int = 0
) -> dict[str, Any]:
    """Options for one engine of a run: params' ``backends.options`` and what the run adds.

    OpenVINO INT8 gets its gates from ``thresholds`` (``cosine_min.int8``,
    ``decision_flips_max``) and calibrates on the run's validation faces and pairs; it
    loads even when it misses them, so the run measures it and judges it by the same
    gates as every other candidate.
    """
    from arcface_lab.engines.registry import get_backend

    options: dict[str, Any] = dict(params.backends.options.get(backend, {}))
    if threads and "threads" in get_backend(backend).option_names:
        options.setdefault("threads", threads)
    if backend == "openvino" and precision == "int8":
        options.update(int8_gate_options(params))
        options.setdefault("int8_enforce_gates", False)
        options.setdefault("calibration", params.data.images)
        options.setdefault("pairs", params.data.pairs)
        options.setdefault("flip", params.data.flip)
    return options


def int8_gate_options(params: Params) -> dict[str, Any]:
    """The INT8 gates from params, as OpenVINO options; a clear error when params lack them."""
    t = params.thresholds
    if "int8" not in t.cosine_min or t.decision_flips_max is None:
        raise ParamsError(
            f"{params.source}: INT8 needs accuracy gates: thresholds.cosine_min.int8 and "
            "thresholds.decision_flips_max"
        )
    return {"int8_cosine_min": t.cosine_min["int8"], "int8_flips_max": t.decision_flips_max}


# --------------------------------------------------------------------------- running


def held_out_images(
    spec: str, size: tuple[int, int], params: Params | None = None, faces: Any = None
) -> np.ndarray:
    """The held-out faces: ``synthetic:N`` with their own seed, ``faces:...``, or a path.

    ``faces`` is the run's :class:`~arcface_lab.models.faces.FaceSpecs` (photos shared
    with other specs are aligned once); without it, one is opened for this spec.
    """
    from arcface_lab.data.images import images_from_spec

    if spec.startswith(FACES_PREFIX):
        return _real_faces(spec, size, faces or _face_specs(params)).faces
    return images_from_spec(spec, size, seed=HELD_OUT_SEED)[0]


def _face_specs(params: Params | None) -> Any:
    """A resolver for one run's ``faces:`` specs: the finder opened once, photos aligned once."""
    from arcface_lab.config.params import FacesParams
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.models.faces import FaceSpecs

    return FaceSpecs(params.faces if params is not None else FacesParams(), default_cache_root())


def _real_faces(spec: str, size: tuple[int, int], faces: Any) -> Any:
    """``faces:SOURCE,...``: the AlignResult of those photos, through the run's resolver."""
    if tuple(size) != (112, 112):
        raise InputError(f"{spec}: aligned faces are 112x112; the model takes {size}")
    return faces.align(spec)


def _real_faces_as_files(params: Params, images: np.ndarray, pairs: Any, folder: Path) -> Params:
    """``params`` with ``faces:`` data replaced by files in ``folder`` holding those faces."""
    import dataclasses

    from arcface_lab.data.pairs import save_csv

    data = params.data
    if data.images.startswith(FACES_PREFIX):
        path = folder / "real_faces.npy"
        np.save(path, images)
        data = dataclasses.replace(data, images=str(path))
    if data.pairs.startswith(FACES_PREFIX):
        data = dataclasses.replace(data, pairs=str(save_csv(pairs, folder / "real_pairs")))
    return params if data is params.data else dataclasses.replace(params, data=data)


def _inputs(
    params: Params, model: ModelSource, faces: Any = None
) -> tuple[dict[str, np.ndarray], Any, dict[str, Any]]:
    from arcface_lab.data.images import images_from_spec
    from arcface_lab.data.pairs import load_pairs
    from arcface_lab.measure.bench import pair_arrays
    from arcface_lab.models.faces import real_pairs

    size = model.preprocess.size
    d = params.data
    if faces is None:  # validation, held-out faces and pairs: one finder, once
        faces = _face_specs(params)
    if d.pairs.startswith(FACES_PREFIX):
        pairs = real_pairs(_real_faces(d.pairs, size, faces), params.faces.shift_px, d.pairs)
    else:
        pairs = load_pairs(d.pairs, size)
    if d.images.startswith(FACES_PREFIX):
        images, kind = _real_faces(d.images, size, faces).faces, "real faces"
    else:
        images, kind = images_from_spec(d.images, size)
    arrays = {
        "images": images,
        "held_out": held_out_images(d.held_out, size, params, faces),
        **pair_arrays(pairs, d.flip),
    }
    data = {
        "images": len(images),
        "images_kind": kind,
        "held_out": len(arrays["held_out"]),
        "pairs": pairs.n_pairs,
        "pairs_kind": pairs.kind,
        "pairs_source": pairs.source,
    }
    return arrays, pairs, data


class _Progress:
    """A tqdm bar over the candidates, with one line per finished candidate.

    A terminal gets tqdm's text bar; a notebook kernel its widget bar when ipywidgets is
    installed (text redraws would pile up in a saved notebook); anything else (a log
    file, a notebook without ipywidgets) gets one plain line per candidate.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self._phase, self._phase_at = "", 0.0
        self.total, self.started = total, 0
        if enabled:
            self.bar = _bar(total)
        self.enabled = enabled

    #: Plain output prints a phase line at most this often.
    PHASE_EVERY_S = 20.0

    def start(self, label: str) -> None:
        self._phase, self._phase_at = "", 0.0
        self.started += 1
        if self.bar is None and self.enabled:
            print(f"  [{self.started}/{self.total}] {label} ...", file=sys.stderr, flush=True)

    def running(self, label: str, seconds: float, phase: str = "") -> None:
        """``label`` has run ``seconds``; ``phase`` is what its worker said it is doing.

        The bar shows it in place; plain lines (a log, a notebook without widgets) get a
        line when the phase changes, at most one every :attr:`PHASE_EVERY_S`.
        """
        if self.bar is not None:
            now = f"{label}: {phase} ({seconds:.0f} s)" if phase else f"{label}: {seconds:.0f} s"
            self.bar.set_postfix_str(now, refresh=True)
            return
        due = not self._phase or seconds - self._phase_at >= self.PHASE_EVERY_S
        if self.enabled and phase and phase != self._phase and due:
            print(f"      {seconds:.0f} s: {phase}", file=sys.stderr, flush=True)
            self._phase, self._phase_at = phase, seconds

    def done(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _bar_kind() -> str | None:
    """``widget`` in a notebook kernel with ipywidgets, ``text`` on a terminal, else None."""
    if "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None:
        return "widget"
    if sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None:
        return "text"
    return None


def _bar(total: int) -> Any:
    """The tqdm bar this output can show (see :class:`_Progress`), or None."""
    kind = _bar_kind()
    kwargs = {"total": total, "desc": "optimize", "unit": "candidate"}
    if kind == "widget":
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm(**kwargs)
    if kind == "text":
        from tqdm import tqdm

        return tqdm(file=sys.stderr, **kwargs)
    return None


def _wait(
    call: Callable[[], Any], label: str, progress: _Progress, phase: Path | None = None
) -> Any:
    """Run ``call`` in a thread, refreshing the progress bar while it runs; ``phase`` is the
    file its worker reports its phase in (:mod:`arcface_lab.core.progress`)."""
    from arcface_lab.core.progress import read_phase

    if phase is not None:
        phase.unlink(missing_ok=True)  # the last candidate's phase is not this one's
    started = time.perf_counter()
    progress.start(label)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(call)
        try:
            while True:
                try:
                    return future.result(timeout=1.0)
                except concurrent.futures.TimeoutError:
                    progress.running(label, time.perf_counter() - started, read_phase(phase))
        except BaseException:  # SIGTERM or Ctrl-C here: the thread's worker must not outlive us
            from arcface_lab.measure.bench import stop_workers

            stop_workers()
            raise


def _measured(
    cand: Candidate,
    raw: dict[str, Any],
    out: dict[str, np.ndarray],
    ref: CandidateResult | None,
    same: np.ndarray,
    params: Params,
    batch: int,
) -> CandidateResult:
    """A candidate's worker output compared with the reference's, gated by params."""
    from arcface_lab.core.metrics import compare_verification, cosine_drift
    from arcface_lab.measure.bench import bench_records, pair_embeddings

    ref_raw, ref_out = (raw, out) if ref is None else (ref.worker or {}, ref.outputs)
    drift = cosine_drift(ref_out["images"], out["images"])
    held = cosine_drift(ref_out["held_out"], out["held_out"])
    ver = compare_verification(*pair_embeddings(ref_out), *pair_embeddings(out), same)
    records = bench_records(raw, out["images"], ref_raw, ref_out["images"])
    for r in records:
        r.update(engine=cand.label, reference=ref is None)
    timing = raw["timings"].get(str(batch))
    ref_timing = ref_raw["timings"].get(str(batch))
    checks = gate_checks(
        cand.precision,
        {"drift": drift.to_dict(), "held_out": held.to_dict(), "verification": ver},
        params.thresholds,
        label=cand.label,
    )
    failed = [c for c in checks if not c.passed]
    result = CandidateResult(
        candidate=cand,
        status="failed_gate" if failed else "passed",
        reason="; ".join(
            f"{c.metric.removeprefix(cand.label + ' ')} {_number(c.measured)} (gate {c.target})"
            for c in failed
        ),
        checks=checks,
        latency_ms=(
            None
            if timing is None
            else {"median": timing["median_ms"], "p90": timing["p90_ms"], "p99": timing["p99_ms"]}
        ),
        cosine_min=drift.min,
        held_out_cosine_min=held.min,
        decision_flips=int(ver["decision_flips"]),
        accuracy_delta=float(ver["accuracy_delta"]),
        first_run_s=float(raw["setup_s"]),
        info=raw["info"],
        records=records,
        drift=drift,
        held_out=held,
        verification=ver,
        worker=raw,
        outputs=out,
    )
    _set_speed(result, ref_timing, timing)
    if cand.support.reason and cand.support.native:
        result.reason = "; ".join(filter(None, [result.reason, cand.support.reason]))
    return result


def _set_speed(
    result: CandidateResult, ref_timing: Mapping[str, Any] | None, timing: Mapping[str, Any] | None
) -> None:
    """The speedup at the comparison batch, its 95 % interval and both repeat counts."""
    from arcface_lab.core.speed import timing_interval

    if not timing or not ref_timing:
        return
    result.speedup_vs_reference = ref_timing["median_ms"] / timing["median_ms"]
    result.speedup_ci = timing_interval(ref_timing, timing)
    result.repeats = {"candidate": timing["repeats"], "reference": ref_timing["repeats"]}


def _time_reference_again(
    ref_spec: Any, ref: CandidateResult, results: list[CandidateResult], batch: int, bar: Any
) -> dict[str, Any]:
    """Time the reference again at ``batch`` and pool it (:func:`_retimed_reference`).

    If that second timing fails, the candidates' figures stand against the first one: the
    failure is logged and recorded (``{"error": ...}``), never the end of the run.
    """
    from arcface_lab.measure.bench import run_worker

    label = f"{ref.candidate.label} again"
    spec = dataclasses.replace(ref_spec, batch_sizes=(batch,), inputs={}, give_up_ms=0.0)
    try:
        again, _ = _wait(lambda: run_worker(spec), label, bar)
    except ArcfaceLabError as exc:
        log.warning("%s failed (%s): speedups are against the first timing only", label, exc)
        bar.done(f"  reference {label}: failed ({_one_line(exc)}); the first timing stands")
        return {"error": _one_line(exc)}
    record = _retimed_reference(ref, again, results, batch)
    bar.done(
        f"  reference {label}: {record.get('after_ms', 0):.0f} ms at batch {batch} "
        f"({100 * record.get('drift', 0):+.1f} % since the first timing)"
    )
    return record


def _retimed_reference(
    ref: CandidateResult, again: Mapping[str, Any], results: list[CandidateResult], batch: int
) -> dict[str, Any]:
    """Pool the reference's repeats from before and after the candidates; every speedup is
    then taken against the pooled median, with an interval that carries the drift.

    The reference is timed again after the candidates because a 2-core machine drifts
    over minutes (the torch reference itself moved +-10 % between repeats on a Zen 3): a
    candidate timed late is compared with both ends of the run, not the first minute only.
    """
    from arcface_lab.measure.bench import bench_records, summarize

    key = str(batch)
    before = (ref.worker or {}).get("timings", {}).get(key)
    after = again.get("timings", {}).get(key)
    if not before or not after:
        return {}
    samples = [*before.get("samples_ms", ()), *after.get("samples_ms", ())]
    pooled = summarize([v / 1e3 for v in samples], batch, target_cov=1.0).to_dict()
    pooled["stable"] = before["stable"] and after["stable"]
    record = {
        "before_ms": before["median_ms"],
        "after_ms": after["median_ms"],
        "drift": after["median_ms"] / before["median_ms"] - 1.0,
        "repeats": pooled["repeats"],
    }
    assert ref.worker is not None
    ref.worker["timings"][key] = pooled
    ref.latency_ms = {
        "median": pooled["median_ms"],
        "p90": pooled["p90_ms"],
        "p99": pooled["p99_ms"],
    }
    for r in [ref, *results]:
        if r.worker is None or key not in r.worker.get("timings", {}):
            continue
        own = ref if r.candidate.key == ref.candidate.key else r
        if own is ref:  # the reference's own row: the pooled timing, as the reference's
            r.latency_ms = dict(ref.latency_ms)
        _set_speed(r, pooled, (own.worker or {})["timings"][key])
        records = bench_records(r.worker, r.outputs["images"], ref.worker, ref.outputs["images"])
        fields = ["speedup_vs_reference", "speedup_ci", "reference_repeats"]
        if own is ref:  # the reference's own rows: its pooled timing throughout
            fields += ["latency_ms", "throughput_ips", "cov", "stable", "repeats"]
        for old, new in zip(r.records, records, strict=True):
            old.update({k: new[k] for k in fields})
    return record


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.5f}"


def _line(r: CandidateResult) -> str:
    speed = f"{r.speedup_vs_reference:.2f}x" if r.speedup_vs_reference is not None else "-"
    cos = f"cos {r.cosine_min:.5f}" if r.cosine_min is not None else ""
    tail = f": {r.reason}" if r.reason else ""
    return f"  {r.candidate.label:<44} {r.status:<12} {speed:>7} {cos}{tail}"


def optimize(
    model: str | ModelSource | None = None,
    params: Params | str | Path | None = None,
    *,
    budget_s: float | None = None,
    out: str | Path | None = None,
    host: Host | None = None,
    progress: bool = True,
    recreate: bool = False,
    store: Mapping[str, Any] | None = None,
    workdir: str | Path | None = None,
    plan: list[Candidate] | None = None,
    device: str | None = None,
    threads: int | None = None,
    faces: Any = None,
) -> OptimizeResult:
    """Try every native candidate of ``params`` on this host; choose the fastest that passes.

    Args:
        model: a model spec (``seeded:r50``, a ``.pth``, an ``.onnx``) or a resolved
            :class:`~arcface_lab.models.source.ModelSource`; default ``params.model.spec``.
        params: a :class:`~arcface_lab.config.params.Params` or the path of a params file
            (gates, data, candidates, budget).
        budget_s: overrides ``params.optimize.budget_s``.
        out: folder for ``optimize.json`` (none: not written).
        host: the host to plan for (default: :func:`~arcface_lab.core.host.probe`).
        progress: a bar and one line per candidate on stderr.
        recreate: create each engine a second time over the same store (``make bench``
            shows first-run cost against the second creation).
        store: engine store settings for the workers (default: ``params.store``).
        workdir: where the workers' input arrays are written (default: a temporary folder).
        plan: the candidates to try, in order (default: :func:`candidates` of ``params``).
        device: where the workers run (default: the host's GPU when it has one, else the CPU).
        threads: CPU threads per engine (default: the threads this process may use on a CPU
            host; 0 leaves each backend its own default).
        faces: the :class:`~arcface_lab.models.faces.FaceSpecs` that resolves ``faces:``
            data (the caller's, to reuse the photos it aligned; default: one of its own).

    Raises:
        InputError: bad params or model (before anything is measured).
        BackendUnavailable, EngineError: the reference could not run.
    """
    from arcface_lab.config.params import Params, load_params
    from arcface_lab.measure.bench import (
        comparison_batch,
        run_worker,
        saved_inputs,
        spec_from_params,
    )
    from arcface_lab.models.source import ModelSource, resolve_model

    if params is None:
        params = Params()
    elif not isinstance(params, Params):
        params = load_params(params)
    check_params(params)
    host = host or probe()
    m = params.model
    if not isinstance(model, ModelSource):
        model = resolve_model(model or m.spec, arch=m.arch, preprocess=m.overrides(), seed=m.seed)
    budget = params.optimize.budget_s if budget_s is None else float(budget_s)
    if budget <= 0:
        raise InputError(f"budget_s: expected seconds > 0, got {budget}")
    batch = comparison_batch(params)
    plan = candidates(params, host, model) if plan is None else plan
    started = time.perf_counter()
    arrays, pairs, data = _inputs(params, model, faces)
    phases = {"inputs": time.perf_counter() - started}
    store = dict(store) if store is not None else params.store.settings()
    if threads is None:
        threads = host.cpu.threads if host.device == "cpu" else 0
    if device is None and host.device != "cpu":
        device = host.device
    reference = reference_backend(model, params.backends.reference)
    ref_cand = Candidate(reference, "fp32")

    # Workers read INT8 calibration faces and gate pairs by spec; real faces found in
    # photos are written into the workdir first (below), and the workers read those files.
    run_params = params

    def spec(cand: Candidate, inputs: Mapping[str, Path]) -> Any:
        options = engine_options(cand.backend, cand.precision, run_params, threads)
        options.update(dict(cand.options))
        return spec_from_params(
            params,
            cand.backend,
            cand.precision,
            inputs,
            model=model.spec,
            preprocess=model.preprocess.to_dict(),
            options=options,
            store={**store, "strict": params.backends.strict},
            strict=True,
            recreate=recreate,
            threads=threads,
            device=device,
        )

    bar = _Progress(len(plan) + 2, progress)
    results: list[CandidateResult] = []
    reference_again: dict[str, Any] = {}
    try:
        with (
            _workdir(workdir) as folder,
            saved_inputs(arrays, folder) as inputs,
            tempfile.TemporaryDirectory(prefix="arcface-real-faces-") as real,
        ):
            run_params = _real_faces_as_files(params, arrays["images"], pairs, Path(real))
            # its embeddings through the store: the same for the same model and faces
            ref_spec = dataclasses.replace(spec(ref_cand, inputs), reuse_embeddings=True)
            t0 = time.perf_counter()
            raw, outs = _wait(lambda: run_worker(ref_spec), ref_cand.label, bar)
            worker_s = time.perf_counter() - t0
            ref = _measured(ref_cand, raw, outs, None, pairs.same, params, batch)
            ref.phases_s = _phases(raw, worker_s, time.perf_counter() - t0 - worker_s)
            phases["reference"] = ref.seconds
            ref.reason = "the reference every candidate is compared with"
            bar.done(
                f"  reference {ref_cand.label}: "
                f"{ref.latency_ms['median'] if ref.latency_ms else 0:.0f} ms at batch {batch}"
            )
            t0 = time.perf_counter()
            for cand in plan:
                result = _run_candidate(
                    cand,
                    ref,
                    ref_cand,
                    params,
                    pairs.same,
                    batch,
                    budget,
                    t0,
                    lambda c, timeout, give_up: run_worker(
                        dataclasses.replace(spec(c, inputs), give_up_ms=give_up),
                        timeout_s=timeout,
                        phase_file=folder / "phase.txt",
                    ),
                    bar,
                    folder / "phase.txt",
                    results,
                )
                results.append(result)
                bar.done(_line(result))
            phases["candidates"] = time.perf_counter() - t0
            if any(r.ran and r.candidate.key != ref_cand.key for r in results):
                t0 = time.perf_counter()
                reference_again = _time_reference_again(ref_spec, ref, results, batch, bar)
                phases["reference_again"] = time.perf_counter() - t0
    finally:
        bar.close()
    passed = [r for r in results if r.passed and r.latency_ms is not None]
    if passed:
        best = min(passed, key=lambda r: r.latency_ms["median"] if r.latency_ms else 0.0)
        best.status = "chosen"
        best.reason = "; ".join(
            filter(
                None, ["fastest candidate that passed every gate", best.candidate.support.reason]
            )
        )
        for r in passed:
            if r is not best and r.latency_ms and best.latency_ms:
                slower = r.latency_ms["median"] / best.latency_ms["median"]
                r.reason = f"passed; {slower:.2f}x the chosen one's latency"
    outcome = OptimizeResult(
        host=host,
        model=model.describe(),
        batch_size=batch,
        reference=ref,
        candidates=results,
        budget_s=budget,
        wall_s=time.perf_counter() - started,
        data=data,
        same=pairs.same,
        images=arrays["images"],
        reference_again=reference_again,
        phases_s=phases,
    )
    if out is not None:
        outcome.write(out)
    return outcome


@contextlib.contextmanager
def _workdir(folder: str | Path | None) -> Iterator[Path]:
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="arcface-optimize-") as tmp:
        yield Path(tmp)


def _run_candidate(
    cand: Candidate,
    ref: CandidateResult,
    ref_cand: Candidate,
    params: Params,
    same: np.ndarray,
    batch: int,
    budget: float,
    t0: float,
    run: Callable[[Candidate, float, float], tuple[dict[str, Any], dict[str, np.ndarray]]],
    bar: _Progress,
    phase: Path | None = None,
    done: list[CandidateResult] | None = None,
) -> CandidateResult:
    """One candidate: skipped with its reason, or run in its worker and gated.

    ``done`` are the candidates measured before it: when one passed (and
    ``optimize.prune`` is on), a candidate whose best case cannot reach the lower end of
    the fastest passing one's interval is ``cannot_win``: before its worker starts when
    a measured candidate bounds it (:func:`_best_case_bound`), else after its worker's
    probe (:attr:`~arcface_lab.measure.bench.BenchSpec.give_up_ms`). The first candidate
    of each precision is always measured, so the verdict judges every precision on an
    engine of its own.
    """
    from arcface_lab.errors import EngineError, WorkerTimeout

    if cand.support.status == "unavailable":
        return CandidateResult(cand, "unavailable", cand.support.reason)
    if cand.support.status == "emulated" and not params.optimize.emulated:
        return CandidateResult(
            cand, "not_native", f"{cand.support.reason} (optimize.emulated: true tries it)"
        )
    if cand.key == ref_cand.key:  # the reference itself: measured once, judged like the others
        result = _measured(cand, ref.worker or {}, ref.outputs, ref, same, params, batch)
        result.records = [dict(r, reference=False) for r in ref.records]
        return result
    left = budget - (time.perf_counter() - t0)
    if left <= 0:
        return CandidateResult(
            cand, "over_budget", f"not started: the budget of {budget:.0f} s was spent"
        )
    done = done or []
    # Pruned only where its precision already has a measured engine (not the reference's
    # own row), so every precision the verdict judges was measured on a real candidate.
    measured = any(
        r.ran and r.candidate.precision == cand.precision and r.candidate.key != ref_cand.key
        for r in done
    )
    to_beat = _fastest_passed(done) if params.optimize.prune and measured else None
    give_up_ms = 0.0
    if to_beat is not None:
        needed = _interval(to_beat)[0]
        bound = _best_case_bound(cand, done)
        if bound is not None:
            best = _interval(bound)[1]
            if best < needed:
                source = f"{bound.candidate.label}, measured in this run, bounds it"
                return _cannot_win(cand, to_beat, best, source)
        elif ref.latency_ms:
            give_up_ms = ref.latency_ms["median"] / needed
    t_start = time.perf_counter()

    def failed(status: str, reason: str) -> CandidateResult:  # its seconds still count
        spent = {"start": time.perf_counter() - t_start}
        return CandidateResult(cand, status, reason, phases_s=spent)

    try:
        raw, out = _wait(lambda: run(cand, left, give_up_ms), cand.label, bar, phase)
    except WorkerTimeout:
        return failed("over_budget", f"stopped after {left:.0f} s: the budget of {budget:.0f} s")
    except EngineError as exc:
        return failed("error", _one_line(exc))
    except BackendUnavailable as exc:
        return failed("unavailable", _one_line(exc))
    except InputError:
        raise  # bad params or data: the user must fix them, not optimize around them
    except ArcfaceLabError as exc:
        return failed("error", _one_line(exc))
    worker_s = time.perf_counter() - t_start
    if "cannot_win" in raw:
        probe = raw["cannot_win"]
        assert to_beat is not None and ref.latency_ms is not None
        best = ref.latency_ms["median"] / probe["best_ms"]
        source = (
            f"its fastest of {len(probe['runs_ms'])} batches of {probe['batch']}: "
            f"{probe['best_ms']:.0f} ms"
        )
        result = _cannot_win(cand, to_beat, best, source)
        result.first_run_s, result.info, result.worker = float(raw["setup_s"]), raw["info"], raw
        result.phases_s = _phases(raw, worker_s, 0.0)
        return result
    t0 = time.perf_counter()
    result = _measured(cand, raw, out, ref, same, params, batch)
    result.phases_s = _phases(raw, worker_s, time.perf_counter() - t0)
    return result


def _phases(raw: Mapping[str, Any], worker_s: float, gate_s: float) -> dict[str, float]:
    """A worker's phases, its start-up (the rest of its wall time) and the gating after it."""
    phases = {k: float(v) for k, v in (raw.get("phases_s") or {}).items()}
    phases = {"start": max(worker_s - sum(phases.values()), 0.0), **phases}
    if gate_s:
        phases["gate"] = gate_s
    return phases


def _interval(r: CandidateResult) -> tuple[float, float]:
    """A measured speedup's 95 % interval (the speedup itself at both ends when it has none)."""
    assert r.speedup_vs_reference is not None
    if r.speedup_ci is None:
        return r.speedup_vs_reference, r.speedup_vs_reference
    return float(r.speedup_ci[0]), float(r.speedup_ci[1])


def _fastest_passed(done: list[CandidateResult]) -> CandidateResult | None:
    """The passing candidate with the highest speedup so far (None: none passed yet)."""
    passed = [r for r in done if r.passed and r.speedup_vs_reference is not None]
    return max(passed, key=lambda r: r.speedup_vs_reference or 0.0, default=None)


def _best_case_bound(cand: Candidate, done: list[CandidateResult]) -> CandidateResult | None:
    """A measured candidate that is ``cand`` at its fastest: for an INT8 precision search,
    the same backend, precision and options with the search off (INT8 on every layer; the
    search only moves layers back to floating point). None: only a probe can tell."""
    mine = dict(cand.options)
    if mine.get("int8_search", True) is False:
        return None
    same = {k: v for k, v in mine.items() if k not in SEARCH_ONLY_OPTIONS}
    for r in done:
        c, theirs = r.candidate, dict(r.candidate.options)
        if (
            (c.backend, c.precision) == (cand.backend, cand.precision)
            and theirs.get("int8_search") is False
            and {k: v for k, v in theirs.items() if k not in SEARCH_ONLY_OPTIONS} == same
            and r.speedup_vs_reference is not None
        ):
            return r
    return None


#: Options that change only how the INT8 search selects, never the all-INT8 engine.
SEARCH_ONLY_OPTIONS = frozenset({"int8_search", "int8_margin", "int8_enforce_gates"})


def _cannot_win(
    cand: Candidate, to_beat: CandidateResult, best: float, source: str
) -> CandidateResult:
    """``cand`` is not timed: ``best``, its best-case speedup, is below ``to_beat``'s interval."""
    from arcface_lab.core.speed import format_interval

    low, high = _interval(to_beat)
    assert to_beat.speedup_vs_reference is not None
    reason = (
        f"cannot win: at best {best:.2f}x ({source}), below "
        f"{to_beat.candidate.label}'s {to_beat.speedup_vs_reference:.2f}x "
        f"{format_interval((low, high))}"
    )
    figures = {
        "speedup": best,
        "source": source,
        "to_beat": to_beat.candidate.label,
        "to_beat_speedup": to_beat.speedup_vs_reference,
        "to_beat_interval": [low, high],
    }
    return CandidateResult(cand, "cannot_win", reason, best_case=figures)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " / ".join(lines[-3:]) if lines else type(exc).__name__
