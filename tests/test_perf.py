"""``make bench`` end to end on a tiny model: every engine in its own worker, created twice."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from arcface_lab.runs.perf import main
from tests.conftest import tiny_params

TINY = tiny_params(name="perf-tiny")


def test_perf_compares_every_engine_with_the_reference(tmp_path: Path, cache_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "bench"
    engines = "torch:fp32,onnxruntime:fp32,torch:bf16"
    argv = ["--params", str(params), "--engines", engines, "--batch", "4"]
    status = main([*argv, "--out", str(out)])
    assert status == 1  # torch has no bf16: that row is unavailable, and the exit status says so
    payload = json.loads((out / "bench.json").read_text())
    ref, ort, bad = payload["optimize"]["candidates"]
    assert ref["speedup_vs_reference"] == 1.0 and ref["cosine_min"] > 0.99999
    assert ort["cosine_min"] >= 0.99999 and ort["held_out_cosine_min"] >= 0.99999
    assert ort["decision_flips"] == 0 and ort["status"] in ("chosen", "passed")
    assert ort["speedup_vs_reference"] > 0 and payload["optimize"]["batch_size"] == 4
    # created twice over one store: built first, loaded the second time
    assert ort["artifact"]["origin"] == "built"
    table = (out / "bench.md").read_text()
    assert "(built)" in table and "(local)" in table  # 1st and 2nd creation of onnxruntime
    assert bad["status"] == "unavailable" and "precision 'bf16' not supported" in bad["reason"]
    assert "| onnxruntime/fp32 |" in table and "unavailable" in table
    assert not list(out.glob(".bench-*")) and not list(out.glob("store-*"))
