"""Optimize: native/emulated per hardware class, candidates, gates, the choice, the budget."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.config.params import Params, load_params
from arcface_lab.core.host import CPU_CLASSES, Host
from arcface_lab.engines.registry import create_engine, get_backend
from arcface_lab.errors import BackendUnavailable, ParamsError
from arcface_lab.measure.acceptance import Check, format_checks, speed_check, verdict_passed
from arcface_lab.measure.optimize import candidates, optimize
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]
BF16_CLASSES = {"cpu-amx", "cpu-avx512-bf16"}
VNNI_CLASSES = {"cpu-amx", "cpu-avx512-bf16", "cpu-avx512-vnni", "cpu-avx2-vnni"}


def _status(backend: str, precision: str, host: Host) -> str:
    return get_backend(backend).support(precision, host).status


@pytest.mark.parametrize("cls", sorted(CPU_CLASSES))
def test_what_is_native_on_each_cpu_class(cls: str) -> None:
    host = Host.for_class(cls)
    bf16 = "native" if cls in BF16_CLASSES else "emulated"
    assert _status("torch_fast", "bf16", host) == bf16
    assert _status("openvino", "bf16", host) == ("native" if cls in BF16_CLASSES else "unavailable")
    assert _status("torch_fast", "fp16", host) == "emulated"  # no FP16 arithmetic on a CPU
    assert _status("onnxruntime", "fp16", host) == "emulated"
    assert _status("torch", "fp32", host) == "native"
    assert _status("tensorrt", "fp16", host) == "unavailable"
    for winograd in ("ncnn", "mnn"):  # FP32 with Winograd, a candidate on every CPU class
        if get_backend(winograd).availability() is None:
            assert _status(winograd, "fp32", host) == "native"
    int8 = get_backend("openvino").support("int8", host)
    assert int8.status == "native"
    assert ("overflow fix" in int8.reason) == (cls not in VNNI_CLASSES)
    if cls not in BF16_CLASSES:
        reason = get_backend("openvino").support("bf16", host).reason
        assert "no native BF16" in reason and cls in reason


def test_under_an_isa_cap_onnx_runtime_is_not_the_capped_class() -> None:
    from dataclasses import replace

    base = Host.for_class("cpu-avx2")
    capped = replace(base, cpu=replace(base.cpu, isa_cap="AVX2", generation="Zen 5"))
    support = get_backend("onnxruntime").support("fp32", capped)
    assert support.status == "emulated" and "ignore the ISA cap (AVX2)" in support.reason
    assert "not cpu-avx2's" in support.reason
    assert _status("onnxruntime", "fp32", base) == "native"
    assert _status("openvino", "int8", capped) == "native"  # oneDNN honours the cap
    params = load_params(ROOT / "params" / "default.yaml")
    plan = {c.label: c for c in candidates(params, capped)}
    assert not plan["onnxruntime/fp32"].support.native and plan["openvino/fp32"].support.native
    assert not plan["ncnn/fp32"].support.native and not plan["mnn/fp32"].support.native


def test_what_is_native_on_gpu_classes() -> None:
    h100, v100, p100 = (Host.for_class(c) for c in ("gpu-sm90", "gpu-sm70", "gpu-sm60"))
    assert _status("torch_fast", "fp16", h100) == "native"
    assert _status("torch_fast", "bf16", h100) == "native"
    assert _status("torch_fast", "bf16", v100) == "emulated"
    assert _status("torch_fast", "fp16", p100) == "emulated"
    assert "cpu only" in get_backend("openvino").support("fp32", h100).reason
    assert _status("torch", "fp32", h100) == "native"


def test_candidates_per_class_are_ordered_and_only_native_ones_run() -> None:
    params = load_params(ROOT / "params" / "default.yaml")
    zen3 = candidates(params, Host.for_class("cpu-avx2"))
    zen4 = candidates(params, Host.for_class("cpu-avx512-bf16"))
    for plan in (zen3, zen4):
        native = [c for c in plan if c.support.native]
        assert plan[: len(native)] == native  # runnable ones first, fastest expected first
        speeds = [c.expected_speedup for c in native]
        assert speeds == sorted(speeds, reverse=True)
        labels = [c.label for c in plan]
        assert "openvino/int8 (int8_search=False)" in labels and "openvino/int8" in labels
        assert "torch/fp32" in labels and not any("tensorrt" in label for label in labels)
    assert not any(c.precision == "bf16" and c.support.native for c in zen3)
    assert zen3[0].label == "openvino/int8 (int8_search=False)"  # INT8: the only lever on AVX2
    assert zen4[0].label == "openvino/int8 (int8_search=False)"
    assert [c.label for c in zen4 if c.precision == "bf16" and c.support.native] == [
        "openvino/bf16",
        "torch_fast/bf16",
    ]


def test_speed_targets_are_keyed_by_class_with_globs() -> None:
    gpu = load_params(ROOT / "params" / "gpu.yaml").thresholds
    key, target = gpu.speed_target("gpu-sm90") or ("", None)
    assert key == "gpu-*" and target is not None and target.speedup_min == 5.0
    cpu = load_params(ROOT / "params" / "default.yaml").thresholds
    assert cpu.speed_target("cpu-avx2")[1].speedup_min == 1.6  # type: ignore[index]
    assert cpu.speed_target("cpu-avx512-bf16")[1].speedup_min == 3.5  # type: ignore[index]
    assert cpu.speed_target("cpu-amx")[1].speedup_min == 4.0  # type: ignore[index]
    assert cpu.speed_target("cpu-avx512-vnni") is None
    check = speed_check("openvino/int8", 2.4, 32, "cpu-avx2", cpu)
    assert check.status == "pass" and "Zen 3" in check.floor and "openvino/int8" in check.note
    assert speed_check("x", 1.5, 32, "cpu-avx2", cpu).status == "FAIL"
    na = speed_check("x", 4.1, 32, "cpu-avx512-vnni", cpu)
    assert na.status == "n/a" and "no speed target for cpu-avx512-vnni" in na.note
    assert "4.10x" in na.note
    bad = {"thresholds": {"speed_targets": {"avx2": {"speedup_min": 2}}}}
    with pytest.raises(ParamsError, match=r"speed_targets: expected hardware class names"):
        Params.from_mapping(bad, "p.yaml")
    bad = {"thresholds": {"speed_targets": {"cpu-avx2": {"floor": "x"}}}}
    with pytest.raises(ParamsError, match=r"speed_targets.cpu-avx2.speedup_min: expected a num"):
        Params.from_mapping(bad, "p.yaml")


def test_na_rows_count_neither_way() -> None:
    ok = Check("fp32 cosine min", ">= 0.9", 0.95, True)
    na = Check("bf16", "-", None, False, "n/a on this hardware (cpu-avx2): ...", applicable=False)
    assert verdict_passed([ok, na]) and not verdict_passed([na])
    assert not verdict_passed([ok, na, Check("m", ">= 1", 0.5, False)])
    text = format_checks([ok, na])
    assert "n/a n/a on this hardware (cpu-avx2)" in text and text.endswith("verdict: PASS")
    assert na.to_dict()["status"] == "n/a" and Check.from_dict(na.to_dict()) == na


def test_auto_never_picks_an_emulated_precision(r18) -> None:
    with pytest.raises(BackendUnavailable, match=r"fp16 is emulated here.*auto picks native"):
        create_engine("auto", r18, precision="fp16")
    with create_engine("onnxruntime", r18, precision="fp16") as engine:  # named: it runs
        assert any("fp16 is emulated here" in w for w in engine.info.warnings)


def test_int8_gates_must_be_in_params() -> None:
    from arcface_lab.measure.optimize import engine_options

    params = Params.from_mapping(tiny_params(), "tiny.yaml")
    with pytest.raises(ParamsError, match=r"tiny.yaml: INT8 needs accuracy gates: thresholds"):
        engine_options("openvino", "int8", params)
    assert engine_options("openvino", "fp32", params, threads=2) == {"threads": 2}


def _tiny(tmp_path: Path, **thresholds: object) -> Params:
    raw = tiny_params(
        backends={
            "chain": ["openvino", "onnxruntime", "torch"],
            "reference": "torch",
            "precisions": ["fp32", "fp16", "int8"],
        },
        data={"images": "synthetic:8", "pairs": "synthetic:20", "held_out": "synthetic:8"},
        thresholds={
            "cosine_min": {"fp32": 0.99999, "int8": 0.9999},
            "decision_flips_max": 0,
            **thresholds,
        },
        store={"local": str(tmp_path / "store")},
    )
    raw["bench"] = {**raw["bench"], "speed_repeats": 3}  # type: ignore[dict-item]
    return Params.from_mapping(raw, "tiny.yaml")


def test_optimize_chooses_the_fastest_candidate_that_passes(tmp_path: Path, cache_dir) -> None:
    params = _tiny(tmp_path)
    host = Host.for_class("cpu-avx512-vnni")  # decisions of that class; kernels of this CPU
    plan = [c for c in candidates(params, host) if "int8_search" in dict(c.options)]
    plan += [
        c for c in candidates(params, host) if c.label != "openvino/fp32" and c.precision != "int8"
    ]
    result = optimize("seeded:r18", params, host=host, out=tmp_path / "opt", plan=plan)
    by = {c.candidate.label: c for c in result.candidates}
    int8 = by["openvino/int8 (int8_search=False)"]
    assert int8.status == "failed_gate" and "cosine min" in int8.reason and int8.ran
    assert int8.cosine_min is not None and int8.cosine_min < 0.9999
    assert by["onnxruntime/fp16"].status == "not_native" and not by["onnxruntime/fp16"].ran
    passed = [c for c in result.candidates if c.passed]
    assert {c.candidate.label for c in passed} == {"onnxruntime/fp32", "torch/fp32"}
    chosen = result.chosen
    assert chosen is not None and chosen.status == "chosen"
    fastest = min(passed, key=lambda c: c.latency_ms["median"])  # type: ignore[index]
    assert chosen is fastest  # never slower than the best passing candidate of this run
    assert all(c.held_out_cosine_min is not None for c in result.ran())
    payload = json.loads((tmp_path / "opt" / "optimize.json").read_text())
    assert payload["host"]["class"] == "cpu-avx512-vnni" and payload["host"]["injected"]
    assert payload["chosen"]["label"] == chosen.candidate.label
    assert payload["chosen"]["artifact"] or payload["chosen"]["backend"] == "torch"
    keys = {"status", "reason", "latency_ms", "speedup_vs_reference", "cosine_min"}
    keys |= {"held_out_cosine_min", "decision_flips", "accuracy_delta", "first_run_s"}
    assert all(keys <= set(c) for c in payload["candidates"])
    # Every speedup carries its 95 % interval and the repeats behind it; the reference was
    # timed again after the candidates and the speedups are against both timings.
    again = payload["reference_again"]
    assert again["repeats"] >= 6 and again["before_ms"] > 0 and again["after_ms"] > 0
    for c in (c for c in payload["candidates"] if c["latency_ms"]):
        lo, hi = c["speedup_ci"]
        assert lo <= c["speedup_vs_reference"] <= hi
        assert c["repeats"]["candidate"] >= 3 and c["repeats"]["reference"] == again["repeats"]
    assert payload["reference"]["latency_ms"]["median"] > 0
    # the reference's own rows (bench.json) carry the pooled timing the speedups are against
    [ref_row] = [r for r in result.reference.records if r["batch_size"] == result.batch_size]
    assert ref_row["latency_ms"]["median"] == payload["reference"]["latency_ms"]["median"]
    assert ref_row["repeats"] == again["repeats"]
    assert {c["status"] for c in payload["candidates"]} <= {
        "chosen",
        "passed",
        "failed_gate",
        "not_native",
        "unavailable",
        "error",
        "over_budget",
        "cannot_win",
    }
    # Where the run's seconds went: per candidate that ran, per phase, and for the run.
    for c in (c for c in payload["candidates"] if c["latency_ms"] and c["label"] != "torch/fp32"):
        assert {"start", "prepare", "build", "embed", "time", "gate"} <= set(c["phases_s"])
        assert all(v >= 0 for v in c["phases_s"].values())
    int8_phases = by["openvino/int8 (int8_search=False)"].phases_s
    assert int8_phases.get("calibrate", 0) > 0 or int8.info["artifact"]["origin"] != "built"
    run = payload["phases_s"]
    assert set(run) == {"inputs", "reference", "candidates", "reference_again"}
    assert sum(run.values()) <= payload["wall_s"] + 1e-6
    assert run["candidates"] >= sum(c.seconds for c in result.candidates) - 1e-6


def test_a_spent_budget_stops_the_running_candidate_and_skips_the_rest(tmp_path: Path) -> None:
    params = _tiny(tmp_path)
    host = Host.for_class("cpu-avx2")
    plan = [c for c in candidates(params, host) if c.precision == "fp32"]
    result = optimize("seeded:r18", params, host=host, budget_s=0.5, plan=plan, progress=False)
    by = {c.candidate.label: c for c in result.candidates}
    assert by["openvino/fp32"].status == "over_budget"
    assert "stopped after" in by["openvino/fp32"].reason
    assert by["onnxruntime/fp32"].status == "over_budget"
    assert "not started" in by["onnxruntime/fp32"].reason
    # the reference was measured before the budget started: it stands, and is chosen
    assert result.chosen is not None and result.chosen.candidate.label == "torch/fp32"


def test_a_candidate_is_identified_by_what_it_runs_not_how_it_was_planned() -> None:
    from arcface_lab.engines.base import Support
    from arcface_lab.measure.optimize import Candidate

    planned = Candidate("onnxruntime", "fp32", (), Support("native", "a note"), 1.5)
    reference = Candidate("onnxruntime", "fp32")  # an .onnx model's reference
    assert planned.key == reference.key and planned != reference
    assert Candidate("openvino", "int8", (("int8_search", False),)).key != (
        Candidate("openvino", "int8").key
    )


def test_the_progress_bar_suits_where_it_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook gets the widget bar (text redraws would pile up in a saved notebook), a log
    file plain lines, a terminal the text bar."""
    import importlib.util
    import io
    import sys
    import types

    from arcface_lab.measure import optimize as opt_module

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert opt_module._bar(3) is None  # a log file: plain lines
    progress = opt_module._Progress(2, True)
    progress.start("openvino/fp32")
    progress.done("  openvino/fp32 passed")
    assert sys.stderr.getvalue() == "  [1/2] openvino/fp32 ...\n  openvino/fp32 passed\n"
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    have_widgets = importlib.util.find_spec("ipywidgets") is not None
    assert opt_module._bar_kind() == ("widget" if have_widgets else None)
    monkeypatch.delitem(sys.modules, "ipykernel")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert opt_module._bar_kind() == "text"


@pytest.mark.parametrize("backend", ["ncnn", "mnn"])
def test_a_model_a_converter_cannot_take_is_an_error_candidate_and_optimize_goes_on(
    backend: str, tmp_path: Path
) -> None:
    from tests.test_winograd_engines import _hardmax_onnx

    if get_backend(backend).availability():
        pytest.skip(str(get_backend(backend).availability()))
    model = _hardmax_onnx(tmp_path / "hard.onnx")
    raw = tiny_params(
        model={"spec": str(model)},
        backends={"chain": [backend, "onnxruntime"], "reference": "onnxruntime"},
        store={"local": str(tmp_path / "store")},
    )
    params = Params.from_mapping(raw, "tiny.yaml")
    result = optimize(params=params, progress=False, out=tmp_path / "opt")
    by = {c.candidate.label: c for c in result.candidates}
    failed = by[f"{backend}/fp32"]
    assert failed.status == "error" and not failed.ran
    assert "hard.onnx: operator(s) Hardmax cannot run on" in failed.reason
    assert result.chosen is not None and result.chosen.candidate.label == "onnxruntime/fp32"
    payload = json.loads((tmp_path / "opt" / "optimize.json").read_text())
    [row] = [c for c in payload["candidates"] if c["label"] == f"{backend}/fp32"]
    assert row["status"] == "error" and "Hardmax" in row["reason"]


def test_a_failed_second_reference_timing_leaves_the_first_standing(tmp_path: Path) -> None:
    """The reference is timed again after the candidates; if that worker fails (here: its
    input file is gone), the run keeps every figure against the first timing and says so."""
    from arcface_lab.core.preprocess import Preprocess
    from arcface_lab.measure.bench import BenchSpec
    from arcface_lab.measure.optimize import Candidate, CandidateResult, _Progress
    from arcface_lab.measure.optimize import _time_reference_again as again

    spec = BenchSpec(
        model="seeded:r18",
        backend="torch",
        precision="fp32",
        batch_sizes=(4,),
        images=str(tmp_path / "gone.npy"),
        preprocess=Preprocess().to_dict(),
    )
    worker = {"timings": {"4": {"median_ms": 10.0, "samples_ms": [10.0, 10.0]}}}
    ref = CandidateResult(Candidate("torch", "fp32"), "passed", worker=worker)
    record = again(spec, ref, [], 4, _Progress(1, enabled=False))
    assert "gone.npy" in record["error"]
    assert ref.worker == worker  # the first timing untouched


def _one_candidate(tmp_path: Path, label: str, done: list, run=None):
    """``label`` of ``_tiny``'s plan through ``_run_candidate`` after ``done``, its worker
    real (``run``: instead of the worker)."""
    from arcface_lab.data.images import synthetic_faces
    from arcface_lab.measure.bench import run_worker, saved_inputs, spec_from_params
    from arcface_lab.measure.optimize import Candidate, CandidateResult, _Progress, _run_candidate

    params = _tiny(tmp_path)
    [cand] = [c for c in candidates(params, Host.for_class("cpu-avx2")) if c.label == label]
    ref = CandidateResult(Candidate("torch", "fp32"), "passed", latency_ms={"median": 100.0})
    with saved_inputs({"images": synthetic_faces(4, seed=1)}, tmp_path) as inputs:

        def worker(c, timeout: float, give_up_ms: float):
            spec = spec_from_params(params, c.backend, c.precision, inputs, model="seeded:r18")
            return run_worker(dataclasses.replace(spec, give_up_ms=give_up_ms), timeout)

        return _run_candidate(
            cand, ref, ref.candidate, params, np.zeros(0, dtype=bool), 4, 600.0,
            time.perf_counter(), run or worker, _Progress(1, enabled=False), None, done,
        )  # fmt: skip


def _passed(label: str, speedup: float, interval: tuple[float, float], **options: object):
    from arcface_lab.measure.optimize import Candidate, CandidateResult

    backend, precision = label.split("/")
    return CandidateResult(
        Candidate(backend, precision, tuple(options.items())),
        "passed",
        latency_ms={"median": 100.0 / speedup},
        speedup_vs_reference=speedup,
        speedup_ci=interval,
    )


def test_a_candidate_whose_probe_cannot_reach_the_best_passing_one_stops_there(
    tmp_path: Path,
) -> None:
    """Its worker builds it, times a few batches and stops: no engine reaches 1000x."""
    best = _passed("openvino/fp32", 1000.0, (900.0, 1100.0))
    result = _one_candidate(tmp_path, "onnxruntime/fp32", [best])
    assert result.status == "cannot_win" and not result.ran and result.outputs == {}
    assert "below openvino/fp32's 1000.00x [900.00, 1100.00]" in result.reason
    figures = result.best_case
    assert figures is not None and 0 < figures["speedup"] < 900.0
    assert "fastest of 3 batches of 4" in figures["source"]
    assert {"start", "prepare", "build", "probe"} <= set(result.phases_s)
    assert "embed" not in result.phases_s  # nothing was embedded after the probe
    # A latency the engine beats: the worker goes on to embed and time, as without a probe.
    from arcface_lab.data.images import synthetic_faces
    from arcface_lab.measure.bench import run_worker, saved_inputs, spec_from_params

    with saved_inputs({"images": synthetic_faces(4, seed=1)}, tmp_path) as inputs:
        spec = spec_from_params(_tiny(tmp_path), "onnxruntime", "fp32", inputs, give_up_ms=1e9)
        raw, out = run_worker(dataclasses.replace(spec, model="seeded:r18"))
    assert "cannot_win" not in raw and out["images"].shape == (4, 512)
    assert list(raw["phases_s"]) == ["prepare", "build", "probe", "embed", "time"]


def test_the_int8_search_is_not_run_when_int8_on_every_layer_cannot_win(tmp_path: Path) -> None:
    """The search only moves layers back to floating point: INT8 on every layer, measured
    in this run, is its best case; below the best passing one's interval, nothing runs."""

    def never(*args: object):
        raise AssertionError("the search must not run")

    full = _passed("openvino/int8", 2.0, (1.9, 2.1), int8_search=False)
    full.status = "failed_gate"
    best = _passed("openvino/bf16", 3.0, (2.8, 3.2))
    result = _one_candidate(tmp_path, "openvino/int8", [full, best], run=never)
    assert result.status == "cannot_win"
    assert result.best_case is not None and result.best_case["speedup"] == 2.1
    assert "openvino/int8 (int8_search=False), measured in this run" in result.reason
    # within the interval it may still win: it runs (here: the stand-in says so)
    best = _passed("openvino/bf16", 2.2, (2.05, 2.35))
    with pytest.raises(AssertionError, match="must not run"):
        _one_candidate(tmp_path, "openvino/int8", [full, best], run=never)


def test_the_first_candidate_of_a_precision_is_measured_whatever_passed_before(
    tmp_path: Path,
) -> None:
    """The verdict judges each precision on an engine of its own: the first of a precision
    gets no probe (give_up_ms 0), however fast the best passing one of another is."""
    from arcface_lab.errors import EngineError

    asked: list[float] = []

    def worker(c, timeout: float, give_up_ms: float):
        asked.append(give_up_ms)
        raise EngineError("stand-in worker")

    best = _passed("openvino/bf16", 1000.0, (900.0, 1100.0))
    result = _one_candidate(tmp_path, "onnxruntime/fp32", [best], run=worker)
    assert asked == [0.0] and result.status == "error"
    assert set(result.phases_s) == {"start"}  # a failed worker's seconds still count
    # once an fp32 engine was measured, the next fp32 one is probed against the best
    fp32 = _passed("openvino/fp32", 2.0, (1.9, 2.1))
    fp32.status = "failed_gate"
    _one_candidate(tmp_path, "onnxruntime/fp32", [best, fp32], run=worker)
    assert asked[1] == pytest.approx(100.0 / 900.0)  # the reference's 100 ms over 900x


def test_a_precision_whose_passing_hope_was_not_timed_is_not_judged() -> None:
    """INT8 on every layer failed its gate and the gated search could not win: the
    verdict says int8 was not judged, and why, instead of failing it on the one measured."""
    from arcface_lab.measure.optimize import Candidate, CandidateResult, OptimizeResult
    from arcface_lab.runs.pipeline import _per_precision

    full = _passed("openvino/int8", 12.0, (11.8, 12.2), int8_search=False)
    full.status, full.reason = "failed_gate", "cosine min 0.96763 (gate >= 0.999)"
    search = CandidateResult(Candidate("openvino", "int8"), "cannot_win", "cannot win: at best")
    ref = CandidateResult(Candidate("torch", "fp32"), "passed")
    opt = OptimizeResult(Host.for_class("cpu-amx"), {}, 32, ref, [full, search], 1.0)
    params = Params.from_mapping(tiny_params(backends={"precisions": ["int8"]}), "t.yaml")
    why = _per_precision(params, opt)["int8"]["not_applicable"]
    assert why.startswith("not judged: openvino/int8 not timed (cannot win: at best)")
    assert "openvino/int8 (int8_search=False), the one measured, failed_gate" in why


def test_the_references_embeddings_come_from_the_store_the_second_time(tmp_path: Path) -> None:
    """Same model, faces and runtime: the same embeddings, read back (verified) instead of
    embedded again; the timing is measured anew each time."""
    from arcface_lab.data.images import synthetic_faces
    from arcface_lab.measure.bench import run_worker, saved_inputs, spec_from_params

    params = _tiny(tmp_path)
    faces = {"images": synthetic_faces(4, seed=1), "held_out": synthetic_faces(4, seed=2)}
    with saved_inputs(faces, tmp_path) as inputs:
        spec = spec_from_params(params, "torch", "fp32", inputs, model="seeded:r18")
        spec = dataclasses.replace(spec, store={"local": str(tmp_path / "store")})
        fresh, fresh_out = run_worker(spec)
        first, first_out = run_worker(dataclasses.replace(spec, reuse_embeddings=True))
        again, again_out = run_worker(dataclasses.replace(spec, reuse_embeddings=True))
    assert "embeddings" not in fresh or fresh["embeddings"] == {}
    assert first["embeddings"] == {"images": "built", "held_out": "built"}
    assert again["embeddings"] == {"images": "local", "held_out": "local"}
    for name in faces:
        assert np.array_equal(first_out[name], again_out[name])
        assert np.allclose(fresh_out[name], again_out[name], atol=1e-6)
    assert again["timings"]["4"]["repeats"] >= 2  # timed in this run all the same
