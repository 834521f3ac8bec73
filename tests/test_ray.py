"""embed on Ray Data: a local Ray instance on 127.0.0.1, started here, two CPUs.

Checked: the shards equal the single-process run's, in input order; an actor killed
midway (SIGKILL) loses no face and duplicates none; a second run resumes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.data.shards import MANIFEST, read_manifest, read_shards
from tests.tiny_model import write_tiny_onnx

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'arcface_lab[ray]'")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    """A local Ray instance (2 CPUs, no dashboard) bound to 127.0.0.1, for this module."""
    ray.init(
        address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
        log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


def _single(tiny: Path, n: int, folder: Path) -> np.ndarray:
    from arcface_lab.runs.stream import embed_stream

    embed_stream(tiny, f"synthetic:{n}", folder, chain="onnxruntime", shard_size=64,
                 progress=False, strict=True)  # fmt: skip
    return read_shards(folder)


def test_ray_shards_equal_the_single_process_ones(local_ray, tiny: Path, tmp_path: Path) -> None:
    from arcface_lab.runs.ray_embed import embed_ray

    result = embed_ray(
        tiny, "synthetic:500", tmp_path / "ray", chain="onnxruntime", shard_size=64,
        workers=2, engine_kwargs={"strict": True}, progress=False,
    )  # fmt: skip
    assert (result.faces, result.shards, result.embedded_now) == (500, 8, 500)
    assert result.engine["workers"] == 2 and result.engine["backend"] == "onnxruntime"
    single = _single(tiny, 500, tmp_path / "one")
    np.testing.assert_array_equal(read_shards(tmp_path / "ray"), single)
    # same flags, same job: the single-process folder is complete for the Ray job too
    again = embed_ray(
        tiny, "synthetic:500", tmp_path / "one", chain="onnxruntime", shard_size=64,
        workers=1, engine_kwargs={"strict": True}, progress=False,
    )  # fmt: skip
    assert (again.resumed_shards, again.embedded_now) == (8, 0)


def _actor_pids() -> list[int]:
    """The processes of our Ray Data actors (their title names the UDF class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ShardEmbedder" in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def test_a_worker_killed_midway_loses_and_duplicates_nothing(
    local_ray, tiny: Path, tmp_path: Path
) -> None:
    from arcface_lab.runs.ray_embed import embed_ray

    out = tmp_path / "ray"
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = embed_ray(
                tiny, "synthetic:3000", out, chain="onnxruntime", shard_size=64, workers=2,
                engine_kwargs={"strict": True}, progress=False,
            )  # fmt: skip
        except BaseException as exc:  # recorded, asserted below
            outcome["error"] = exc

    job = threading.Thread(target=run, daemon=True)
    job.start()
    killed = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.is_alive():
        done = len(read_manifest(out)["shards"]) if (out / MANIFEST).is_file() else 0
        pids = _actor_pids()
        if done >= 4 and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.05)
    job.join(600)
    assert not job.is_alive(), "the Ray job never finished"
    assert "error" not in outcome, outcome.get("error")
    assert killed is not None, "no actor was seen running before the job ended"
    manifest = read_manifest(out)
    assert manifest["complete"]
    indexes = [s["index"] for s in manifest["shards"]]
    assert indexes == list(range(47))  # 3000 faces / 64: every shard once, in order
    assert sum(s["count"] for s in manifest["shards"]) == 3000
    np.testing.assert_array_equal(read_shards(out), _single(tiny, 3000, tmp_path / "one"))


def test_without_ray_the_error_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    import builtins

    from arcface_lab.errors import BackendUnavailable
    from arcface_lab.runs import ray_embed

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(BackendUnavailable, match=r"pip install 'arcface_lab\[ray\]'"):
        ray_embed._ray()
