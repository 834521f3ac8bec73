"""The GPU acceptance script, run here on the CPU: the first lent GPU must not find it broken.

A GPU session has 30 minutes of device time, so ``scripts/gpu_acceptance.sh`` has to
work the first time. This runs it end to end with a tiny CPU params file and a
``python3`` on PATH that is this interpreter (the script uses the machine's
``python3``), and checks what it brings back: the environment report, the packed run
folder and its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_acceptance.sh"

TINY = tiny_params(
    name="gpu-script-cpu",
    backends={"chain": ["torch_fast", "torch"], "reference": "torch", "precisions": ["fp32"]},
    data={
        "images": "synthetic:8",
        "held_out": "synthetic:8",
        "pairs": "synthetic:20",
        "flip": False,
    },
    thresholds={"cosine_min": {"fp32": 0.9999}, "decision_flips_max": 0},
)


#: What the lent GPU machine's image lacks (it has PyTorch, Triton and CUDA): made to
#: fail on import here, so the script is tested as it will run there.
ABSENT = ("onnx", "onnxruntime", "openvino", "tensorrt")


def _run(tmp_path: Path, params: dict, **env: str) -> subprocess.CompletedProcess:
    blocked = tmp_path / "absent"
    for name in ABSENT:
        (blocked / name).mkdir(parents=True, exist_ok=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is absent on the GPU machine (test)')\n"
        )
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    python3 = shim / "python3"  # a wrapper, not a link: a venv is found from its own path
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python3.chmod(0o755)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    environ = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
        "OUT": str(tmp_path / "out"),
        "PARAMS": str(params_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # no ONNX export cached from other tests
        "PYTHONPATH": str(blocked),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], env=environ, capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_script_runs_and_packs_the_run_folder(tmp_path: Path) -> None:
    proc = _run(tmp_path, TINY, CHAIN="torch_fast,torch")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "out"
    env_report = (out / "python-env.txt").read_text()
    assert "torch" in env_report and "MISSING REQUIRED" not in env_report
    assert "onnx                   MISSING" in env_report  # run as on the GPU machine
    assert "torch_fast" in (out / "backends.txt").read_text()
    chain = yaml.safe_load((out / "params-gpu-chain.yaml").read_text())["backends"]["chain"]
    assert chain == ["torch_fast", "torch"]
    with tarfile.open(out / "gpu-run.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"gpu-run/verdict.json", "gpu-run/bench.json", "gpu-run/index.html"} <= names
    assert "== done: run status 0" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="a bash script")
def test_gpu_script_reports_a_failed_run_with_its_status(tmp_path: Path) -> None:
    # no reference can run (tensorrt is absent here): nothing can be judged, the run fails
    bad = {**TINY, "backends": {**TINY["backends"], "reference": "tensorrt", "chain": ["torch"]}}
    proc = _run(tmp_path, bad)
    assert proc.returncode not in (0, 4), proc.stdout[-2000:]
    with tarfile.open(tmp_path / "out" / "gpu-run.failed.tar.gz") as tar:
        assert "gpu-run.failed/error.json" in tar.getnames()
