"""``arcface-lab build`` against a real S3 server (SeaweedFS): built, then remote, then corrupt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import seaweedfs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def env(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("xdg")),
    }


def build(env: dict[str, str], server: seaweedfs.SeaweedS3, local: Path, out: Path) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "arcface_lab",
            "build",
            "--model",
            "seeded:r18",
            "--backend",
            "onnxruntime",
            "--store",
            "s3://engines/ci",
            "--s3-endpoint",
            server.endpoint_url,
            "--local-store",
            str(local),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    for warning in result["warnings"]:  # each store warning is printed once, not once a layer
        assert proc.stderr.count(warning) == 1, proc.stderr
    return result


def test_build_then_remote_then_corrupt(s3_server, env, tmp_path: Path) -> None:
    first = build(env, s3_server, tmp_path / "a", tmp_path / "1.json")
    art = first["artifact"]
    assert art["origin"] == "built" and art["size"] > 0 and len(art["sha256"]) == 64
    # under an ISA cap ONNX Runtime warns that its kernels ignore it; nothing else may warn
    assert [w for w in first["warnings"] if "ISA cap" not in w] == [] and first["fallbacks"] == []

    second = build(env, s3_server, tmp_path / "b", tmp_path / "2.json")  # a fresh machine
    assert second["artifact"]["origin"] == "remote"
    assert second["artifact"]["sha256"] == art["sha256"]

    third = build(env, s3_server, tmp_path / "b", tmp_path / "3.json")  # now cached locally
    assert third["artifact"]["origin"] == "local"

    s3_server.client().put_object(
        Bucket="engines", Key=f"ci/{art['key']}/artifact.bin", Body=b"\0" * art["size"]
    )
    fourth = build(env, s3_server, tmp_path / "c", tmp_path / "4.json")
    assert fourth["artifact"]["origin"] == "built"
    assert fourth["artifact"]["sha256"] == art["sha256"]
    assert any("corrupt" in w for w in fourth["warnings"])


def test_server_down_is_a_warning_and_a_local_build(env, tmp_path: Path) -> None:
    down = seaweedfs.closed_port()
    server = seaweedfs.SeaweedS3.__new__(seaweedfs.SeaweedS3)
    server.endpoint_url = f"http://127.0.0.1:{down}"
    result = build(env, server, tmp_path / "a", tmp_path / "1.json")
    assert result["artifact"]["origin"] == "built" and result["warnings"]
