"""A whole run: JSON written, verdict computed from params, HTML rendered from JSON alone."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from arcface_lab.config.params import Params, Thresholds, load_params
from arcface_lab.core.host import probe
from arcface_lab.errors import BackendUnavailable, InputError, ParamsError
from arcface_lab.measure.acceptance import evaluate
from arcface_lab.measure.bench import measure, summarize
from arcface_lab.report.html import render
from arcface_lab.runs.pipeline import run
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]


def _tiny(**overrides: object) -> Params:
    raw = tiny_params(
        backends={"chain": ["onnxruntime", "torch"], "precisions": ["fp32", "fp16"]},
        thresholds={"cosine_min": {"fp32": 0.99999, "fp16": 0.999}, "decision_flips_max": 0},
    )
    raw.update(overrides)
    return Params.from_mapping(raw, "tiny")


def test_run_writes_a_complete_folder(tmp_path: Path, cache_dir: Path, monkeypatch) -> None:
    """On an AVX2 machine (injected): fp16 and bf16 are n/a, never FAIL; the class target holds."""
    from arcface_lab.core.host import CLASS_ENV

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    monkeypatch.setenv(CLASS_ENV, "cpu-avx2")
    params = _tiny(
        backends={
            "chain": ["onnxruntime", "torch_fast", "torch"],
            "precisions": ["fp32", "fp16", "bf16"],
        },
        thresholds={
            "cosine_min": {"fp32": 0.99999, "fp16": 0.999, "bf16": 0.999},
            "decision_flips_max": 0,
            "speedup_batch": 4,
            "speed_targets": {"cpu-avx2": {"speedup_min": 0.01, "floor": "test floor"}},
        },
        optimize={"prune": False},  # every candidate timed: this test reads their rows
    )
    result = run(params, reports_root=tmp_path)
    assert result.passed, result.summary_text()
    names = {p.name for p in result.run_dir.iterdir()}
    assert {"environment.json", "drift.json", "verification.json", "bench.json"} <= names
    assert {"verdict.json", "index.html", "optimize.json"} <= names
    bench = json.loads((result.run_dir / "bench.json").read_text())["records"]
    keys = {"backend", "precision", "batch_size", "throughput_ips", "cov", "speedup_vs_reference"}
    assert all(keys <= set(r) for r in bench)
    assert [r["engine"] for r in bench if r["reference"]] == ["torch/fp32"]  # marked, not implied
    timed = {"torch_fast/fp32"} if probe().cpu.isa_cap else {"onnxruntime/fp32", "torch_fast/fp32"}
    assert {r["engine"] for r in bench} >= timed  # ONNX Runtime is no candidate under a cap
    verdict = json.loads((result.run_dir / "verdict.json").read_text())
    status = {c["metric"]: c["status"] for c in verdict["checks"]}
    assert status["fp16"] == status["bf16"] == "n/a"
    assert status["fp32 held-out cosine min"] == "pass"
    assert status["chosen engine speedup @ batch 4"] == "pass"
    bf16 = next(c for c in verdict["checks"] if c["metric"] == "bf16")
    assert bf16["note"].startswith("n/a on this hardware (cpu-avx2): torch_fast: torch emulates")
    assert verdict["hardware_class"] == "cpu-avx2" and verdict["chosen"]["status"] == "chosen"
    text = result.summary_text()
    assert "hardware class: cpu-avx2 (injected)" in text and "verdict: PASS" in text
    assert "torch_fast/bf16" in text and "not_native" in text
    env = json.loads((result.run_dir / "environment.json").read_text())
    assert env["hardware_class"] == "cpu-avx2" and env["hardware"]["injected"] == "cpu-avx2"
    assert not list(tmp_path.glob(".*partial"))
    # rendered again from the JSON alone
    (result.run_dir / "index.html").unlink()
    page = render(result.run_dir).read_text()
    assert "Verdict" in page and "<h2>Engines</h2>" in page and "Optimize on cpu-avx2" in page
    assert "fp32 on CPUExecutionProvider" in page  # what the ONNX Runtime engine ran on
    # where the run's minutes went: a row per step that cost time, the run's wall last
    from arcface_lab.report import tables

    spent = tables.minutes(json.loads((result.run_dir / "optimize.json").read_text()))
    steps = [r[0] for r in spent.rows]
    assert steps[:2] == ["inputs", "torch/fp32 (reference)"] and steps[-1] == "run (wall)"
    assert "torch_fast/fp32" in steps and "torch/fp32" not in steps  # measured once
    assert "<h2>Where the run&#x27;s minutes went</h2>" in page
    total = spent.header.index("total s")
    assert sum(r[total] for r in spent.rows[:-1]) <= spent.rows[-1][total] + 0.2
    _check_first_screen(result.run_dir, page, env)
    _check_matrix(result.run_dir, tmp_path)
    drift = json.loads((result.run_dir / "drift.json").read_text())
    assert 1 <= len(drift["thumbnails"]) <= 8  # each engine's worst faces, synthetic too
    assert f"Worst-drift faces (synthetic, {drift['images']} validation faces)" in page
    # the worst faces as thumbnails, and the frontier picture of the candidates
    assert page.count('<img alt="face ') == len(drift["thumbnails"])
    assert page.count("data:image/png;base64,") == len(drift["thumbnails"]) + 1
    assert page.count('<figure class="frontier">') == 1


class _Page(HTMLParser):
    """The links, headline rows and status cells of an ``index.html``."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.headline: list[str] = []
        self.coloured: list[tuple[str, str]] = []
        self._in: str | None = None
        self._td_class: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "table" and a.get("class") == "headline":
            self._in = "headline"
        if tag == "th" and self._in == "headline":
            self._in = "headline-th"
        if tag == "td" and a.get("class"):
            self._td_class = a["class"]

    def handle_data(self, data: str) -> None:
        if self._in == "headline-th":
            self.headline.append(data)
            self._in = "headline"
        elif self._td_class:
            self.coloured.append((self._td_class, data))
            self._td_class = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._in:
            self._in = None


def _check_first_screen(run_dir: Path, page: str, env: dict) -> None:
    """What a reviewer needs is at the top, statuses are coloured, no raw Markdown, links resolve."""
    parsed = _Page()
    parsed.feed(page)
    wanted = ["model", "model sha256", "hardware", "date", "run", "git commit", "libraries"]
    assert parsed.headline[: len(wanted)] == wanted
    assert {"chosen engine", "peak memory"} <= set(parsed.headline)
    top = page[: page.index("<h2")]  # the first screen: before the first section
    assert env["model"]["sha256"] in top and "cpu-avx2" in top and "Verdict" in top
    assert f"{env['model']['embedding_dim']}-d" in top and "seeded, untrained" in top
    assert "fp16, bf16" not in top or "n/a" in top  # n/a rows named with their reason once
    assert ("pass", "pass") in parsed.coloured and ("na", "n/a") in parsed.coloured
    assert "|---|" not in page and "<pre>| run" not in page
    for link in parsed.links:
        if link.startswith("#"):
            assert f"id='{link[1:]}'" in page, link
        else:
            assert (run_dir / link).is_file(), link
    assert {"01_build_engines.html", "04_acceptance_report.html"} <= set(parsed.links)
    assert "ACCEPTANCE_MATRIX.md" in parsed.links
    assert "<title>arcface_lab: seeded:r18 on cpu-avx2: PASS" in page


def _check_matrix(run_dir: Path, tmp_path: Path) -> None:
    """Each run writes its row; ``arcface-lab matrix`` merges runs, each once, as one table."""
    from arcface_lab.cli import main
    from arcface_lab.report.matrix import COLUMNS

    own = (run_dir / "ACCEPTANCE_MATRIX.md").read_text().splitlines()
    assert own[2] == "| " + " | ".join(COLUMNS) + " |" and len(own) == 5
    row = own[4].split(" | ")
    assert row[4] == "seeded:r18" or row[2].startswith("seeded:r18")
    assert row[-1] == "PASS |" and "(>= 0.99999, pass)" in own[4]
    second = tmp_path / "second"
    shutil.copytree(run_dir, second)
    out = tmp_path / "ACCEPTANCE_MATRIX.md"
    assert main(["matrix", str(run_dir), str(second), str(run_dir), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and lines[5].startswith("| second | ")
    assert main(["matrix", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert len(out.read_text().splitlines()) == 6  # a failed merge leaves the old file whole


def test_failed_run_keeps_its_folder_and_says_so(tmp_path: Path, cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    params = _tiny(backends={"chain": ["torch"], "reference": "tensorrt", "precisions": ["fp32"]})
    with pytest.raises(BackendUnavailable):  # no reference: nothing can be judged
        run(params, out_dir=tmp_path / "r1")
    failed = tmp_path / "r1.failed"
    assert (failed / "error.json").is_file() and not (tmp_path / "r1").exists()
    assert "The run FAILED" in render(failed).read_text()
    row = (failed / "ACCEPTANCE_MATRIX.md").read_text().splitlines()[-1]
    assert row.startswith("| r1.failed | ") and "| error: BackendUnavailable: " in row


def test_a_second_run_on_the_same_folder_is_refused_at_once(tmp_path: Path) -> None:
    """While a run holds the folder's lock, another is refused and the first's files are kept."""
    from filelock import FileLock

    partial = tmp_path / ".r1.partial"
    partial.mkdir()
    (partial / "environment.json").write_text("{}")  # the first run's work in progress
    busy = r"out_dir .*r1: another run is writing it now"
    with FileLock(str(tmp_path / ".r1.lock")), pytest.raises(InputError, match=busy):
        run(_tiny(), out_dir=tmp_path / "r1", render=False)
    assert (partial / "environment.json").read_text() == "{}"
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r1.failed").exists()


def test_a_stopped_runs_partial_folder_is_swept(tmp_path: Path, cache_dir, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    stale = tmp_path / ".r1.partial"
    stale.mkdir()
    (stale / "verdict.json").write_text('{"passed": true}')  # a killed run's leftover
    params = _tiny(backends={"chain": ["torch"], "reference": "tensorrt", "precisions": ["fp32"]})
    with pytest.raises(BackendUnavailable):
        run(params, out_dir=tmp_path / "r1", render=False)
    failed = tmp_path / "r1.failed"
    assert not stale.exists() and not (failed / "verdict.json").exists()
    assert not (tmp_path / ".r1.lock").exists()


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    with pytest.raises(InputError, match="already exists; runs are never overwritten"):
        run(_tiny(), out_dir=tmp_path / "r1")


def test_verdict_on_constructed_metrics() -> None:
    t = Thresholds(
        cosine_min={"fp16": 0.999},
        accuracy_delta_max={"fp16": 0.001},
        decision_flips_max=0,
        vram_mb_max=2048,
    )
    good = {
        "fp16": {
            "drift": {"min": 0.9995},
            "verification": {"accuracy_delta": -0.0005, "decision_flips": 0},
            "speedup": {32: 6.0},
            "peak_vram_mb": 900.0,
        }
    }
    assert all(c.passed for c in evaluate(good, t))
    bad = {
        "fp16": {
            "drift": {"min": 0.998},
            "verification": {"accuracy_delta": -0.002, "decision_flips": 3},
            "speedup": {32: 4.9},
            "peak_vram_mb": None,
        }
    }
    checks = evaluate(bad, t)
    assert [c.passed for c in checks] == [False] * 4
    assert checks[-1].note == "no GPU in this run"
    missing = evaluate({"fp16": {"unavailable": "no backend"}}, t)
    assert all(not c.passed and c.note == "no backend" for c in missing)


def test_bench_statistics_on_a_synthetic_timer() -> None:
    ticks = iter([0.0, 0.5, 1.0] + [x for i in range(10) for x in (10.0 + i, 10.0 + i + 0.1)])
    timing = measure(
        lambda: None, 8, warmup_s=0.4, budget_s=100, min_repeats=3, clock=lambda: next(ticks)
    )
    assert timing.repeats == 3 and timing.cov == pytest.approx(0.0, abs=1e-9)
    assert timing.median_ms == pytest.approx(100.0) and timing.throughput_ips == pytest.approx(80.0)
    assert timing.samples_ms == (100.0, 100.0, 100.0)  # every repeat, for the interval
    s = summarize([0.01, 0.01, 0.01, 0.02], batch_size=1, target_cov=0.025)
    assert not s.stable and s.p90_ms > s.median_ms == pytest.approx(10.0)


def test_speed_repeats_are_params_and_reach_the_worker_at_the_judged_batch() -> None:
    from arcface_lab.measure.bench import spec_from_params

    raw = tiny_params(bench={"batch_sizes": [1, 4], "speed_repeats": 12})
    raw["thresholds"] = {**raw["thresholds"], "speedup_batch": 4}  # type: ignore[dict-item]
    params = Params.from_mapping(raw, "tiny.yaml")
    spec = spec_from_params(params, "torch", "fp32", {"images": Path("x.npy")})
    assert (spec.speed_batch, spec.speed_repeats) == (4, 12)
    bad = tiny_params(bench={"batch_sizes": [4], "speed_repeats": -1})
    with pytest.raises(ParamsError, match=r"tiny\.yaml.*bench\.speed_repeats.*>= 0"):
        Params.from_mapping(bad, "tiny.yaml")


def test_committed_params_targets() -> None:
    gpu = load_params(ROOT / "params" / "gpu.yaml").thresholds
    assert gpu.speed_targets["gpu-*"].speedup_min == 5.0 and gpu.vram_mb_max == 2048
    assert gpu.cosine_min["fp16"] == 0.999 and gpu.accuracy_delta_max["fp16"] == 0.001


def test_gpu_driver_version_from_nvidia_smi(tmp_path: Path, monkeypatch) -> None:
    import sys

    from arcface_lab.core.host import gpu_driver_version

    monkeypatch.setitem(sys.modules, "pynvml", None)  # NVML absent: the command line answers
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "560.35.03"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_driver_version() == "560.35.03"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert gpu_driver_version() is None
    fake.unlink()
    assert gpu_driver_version() is None


def test_nvml_finds_the_gpu_by_uuid_and_this_process_by_pid(monkeypatch) -> None:
    import os
    import sys
    import types

    from arcface_lab.measure.bench import _nvml_process_mb

    calls: list[str] = []
    procs = [types.SimpleNamespace(pid=1, usedGpuMemory=9 << 30)]
    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByUUID=lambda uuid: calls.append(uuid) or "handle",
        nvmlDeviceGetComputeRunningProcesses=lambda handle: procs,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    props = types.SimpleNamespace(uuid="58b3e9c8-0000-1111-2222-333344445555")
    mb, why = _nvml_process_mb(props)  # only another process on the GPU: no guess
    assert mb is None and "not in NVML's list" in str(why)
    assert calls == ["init", "GPU-58b3e9c8-0000-1111-2222-333344445555", "shutdown"]
    procs.append(types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 << 20))
    assert _nvml_process_mb(props) == (512.0, None)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert "pynvml is not installed" in str(_nvml_process_mb(props)[1])


def test_precision_summary_says_what_each_engine_ran_in() -> None:
    from arcface_lab.report.html import precision_summary

    openvino = {"precision": "int8", "details": {"runtime_precisions": {"bf16": 47, "f32": 1}}}
    assert precision_summary(openvino) == "bf16 47, f32 1 layers (compiled model)"
    trt = {"precision": "fp16", "details": {"layer_precisions": {"counts": {"FP16": 60}}}}
    assert precision_summary(trt) == "FP16 60 layers (engine inspector)"
    fast = {"precision": "fp16", "details": {"fp32_layers": ["features"]}}
    assert precision_summary(fast) == "fp16, FP32: features"
    assert precision_summary({"precision": "fp32", "details": {}}) == "fp32"


def test_the_scale_section_embeds_a_labelled_set_and_gates_the_tar_delta(
    tmp_path: Path, cache_dir: Path, monkeypatch
) -> None:
    """scale.faces: reference and chosen engine streamed, low-FAR table, a TAR-delta check."""
    import numpy as np

    from arcface_lab.core.lowfar import compare_all_pairs
    from arcface_lab.data.stream import SyntheticSource
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.runs.at_scale import SCALE_SEED

    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    params = _tiny(
        backends={"chain": ["onnxruntime", "torch"], "precisions": ["fp32"]},
        scale={
            "faces": 48,
            "faces_per_identity": 4,
            "shard_size": 16,
            "fars": [0.1, 0.01],
            "fpirs": [0.2],
            "gate_far": 0.1,
            "gallery_storage": ["int8", "pq64"],
        },
        reenrolment={"fars": [0.1, 0.01], "fpirs": [0.2]},
        thresholds={
            "cosine_min": {"fp32": 0.99999},
            "decision_flips_max": 0,
            "tar_delta_max": 0.001,
        },
    )
    result = run(params, reports_root=tmp_path, render=False)
    scale = json.loads((result.run_dir / "scale.json").read_text())
    assert (scale["faces"], scale["identities"]) == (48, 12)
    assert scale["reference"]["engine"] == "torch/fp32"
    chosen = json.loads((result.run_dir / "verdict.json").read_text())["chosen"]["label"]
    assert scale["engine"]["engine"] == chosen
    assert scale["reference"]["peak_rss_mb"] > 0 and scale["engine"]["images_per_s"] > 0
    # the same faces through the reference here give the same all-pairs table
    source = SyntheticSource(48, SCALE_SEED, faces_per_identity=4)
    with create_engine("torch", "seeded:r18", strict=True) as ref:
        emb = ref.embed(source.read(0, 48))
    labels = np.arange(48) // 4
    expected = compare_all_pairs(emb, emb, labels, fars=(0.1, 0.01))["reference"]
    got = scale["all_pairs"]["reference"]
    assert (got["genuine_pairs"], got["impostor_pairs"]) == (72, 1056)
    assert [p["tar"] for p in got["points"]] == pytest.approx(
        [p["tar"] for p in expected["points"]], abs=1 / 72
    )
    check = next(c for c in json.loads((result.run_dir / "verdict.json").read_text())["checks"]
                 if c["metric"] == "scale |TAR delta| @ FAR 0.1")  # fmt: skip
    assert check["status"] == "pass" and check["measured"] <= 0.001
    page = (result.run_dir / "index.html").read_text()
    assert "At scale: all-pairs verification (TAR at FAR)" in page
    assert "48 faces, 12 identities" in page
    # an FP32 engine that passed at 0.99999: the reference's gallery still serves it
    block = scale["reenrolment"]
    assert block["required"] is False, block["reason"]
    assert [(p["mode"], p["judged"]) for p in block["points"]] == [
        ("1:1", True),
        ("1:1", True),
        ("1:N", True),
    ]
    transfer = scale["all_pairs"]["mixed"]["threshold_transfer"]
    assert [t["far_target"] for t in transfer] == [0.1, 0.01]
    assert "Switching from the reference to this engine" in page
    assert "gallery re-enrolment</th><td>No re-enrolment needed" in page
    assert '<figure class="switching">' in page
    # the gallery stored as int8 (measured) and pq64 (48 faces cannot train it: said so)
    int8, pq = scale["gallery_storage"]["storages"]
    assert int8["storage"] == "int8" and int8["supported"] and int8["bytes_per_face"] == 516
    assert not pq["supported"] and "256" in pq["reason"]
    assert "What storing the gallery costs" in page
