"""One atomic write and one verified cache: nothing half-written or tampered with is used."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.core.files import (
    QUARANTINE_KEEP,
    atomic_path,
    cached,
    digest_path,
    file_digest,
    write_json_atomic,
)


def test_atomic_path_leaves_the_old_file_on_failure_and_follows_the_umask(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    write_json_atomic(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert dest.read_text().strip().endswith("}") and '"v": 1' in dest.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    old = os.umask(0o022)
    try:
        write_json_atomic(dest, {"v": 2})
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o644


def test_cached_makes_once_and_again_only_when_the_copy_is_bad(tmp_path: Path) -> None:
    made: list[Path] = []

    def make(tmp: Path) -> None:
        made.append(tmp)
        tmp.write_bytes(b"derived " * 1000)

    path = tmp_path / "cache" / "model.onnx"
    assert cached(path, make, ".onnx") == path and len(made) == 1
    assert digest_path(path).read_text().strip() == file_digest(path).sha256
    cached(path, make)
    assert len(made) == 1  # verified: not made again
    for round_ in range(QUARANTINE_KEEP + 2):
        with open(path, "r+b") as f:  # same size, other bytes
            f.seek(100)
            f.write(b"X" * 64)
        cached(path, make)
        assert len(made) == round_ + 2 and path.read_bytes() == b"derived " * 1000
    kept = list((path.parent / "quarantine").iterdir())
    assert len(kept) == QUARANTINE_KEEP  # bounded: the newest bad copies only
    digest_path(path).unlink()  # a copy without its record is not trusted either
    cached(path, make)
    assert len(made) == QUARANTINE_KEEP + 4


def test_a_tampered_onnx_export_is_never_used(tmp_path: Path, faces: np.ndarray) -> None:
    """The cached export overwritten in place: re-exported, and the engine is the model again."""
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.models.source import resolve_model

    model = resolve_model("seeded:r18", cache_dir=tmp_path)
    onnx = model.onnx_path()
    with open(onnx, "r+b") as f:
        f.seek(onnx.stat().st_size // 2)
        f.write(os.urandom(64 * 1024))
    again = resolve_model("seeded:r18", cache_dir=tmp_path)
    assert again.onnx_path() == onnx and (onnx.parent / "quarantine").is_dir()
    with create_engine("torch", again) as ref, create_engine("onnxruntime", again) as ort:
        a, b = ref.embed(faces[:4]), ort.embed(faces[:4])
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.9999


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a process to kill")
def test_a_killed_writers_partial_is_swept_and_a_live_one_is_kept(tmp_path: Path) -> None:
    """An export killed mid-write leaves ``.x.onnx.<pid>-*.partial``; the next maker removes it."""
    import signal
    import subprocess
    import sys

    dest = tmp_path / "onnx" / "x.onnx"
    script = (
        "import os, signal\n"
        "from arcface_lab.core.files import cached\n"
        "def half(tmp):\n"
        "    tmp.write_bytes(b'half an export')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"cached({str(dest)!r}, half, suffix='.onnx')\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    [left] = dest.parent.glob(".x.onnx.*.partial")
    assert re.fullmatch(r"\.x\.onnx\.\d+-[0-9a-f]{8}\.onnx\.partial", left.name), left.name
    # A partial of a writer that is alive (this process's parent) stays.
    live = dest.with_name(f".x.onnx.{os.getppid()}-0123abcd.onnx.partial")
    live.write_bytes(b"being written")
    assert cached(dest, lambda tmp: tmp.write_bytes(b"whole"), suffix=".onnx") == dest
    assert dest.read_bytes() == b"whole" and not left.exists() and live.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(
        ["x.onnx", "x.onnx.sha256", live.name]
    )
