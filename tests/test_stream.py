"""Streaming embedding: sources read a slice at a time, shards, the manifest, resume, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arcface_lab.data.images import synthetic_faces
from arcface_lab.data.shards import MANIFEST, ShardWriter, read_manifest, read_shards
from arcface_lab.data.stream import open_source
from arcface_lab.errors import DataError, InputError
from tests.tiny_model import TINY_DIM, write_tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    from arcface_lab.models.source import resolve_model

    folder = tmp_path_factory.mktemp("tiny")
    return resolve_model(str(write_tiny_onnx(folder / "tiny.onnx")), cache_dir=folder / "cache")


@pytest.fixture(scope="module")
def engine(tiny):
    from arcface_lab.engines.registry import create_engine

    with create_engine("onnxruntime", tiny, strict=True, batch_size=8) as eng:
        yield eng


# --------------------------------------------------------------------------- sources


def test_a_synthetic_slice_equals_the_same_rows_of_the_whole_set() -> None:
    whole = synthetic_faces(12, seed=7)
    assert np.array_equal(synthetic_faces(5, seed=7, start=4), whole[4:9])
    source = open_source("synthetic:12")
    assert len(source) == 12 and np.array_equal(source.read(9, 12), whole[9:])
    with pytest.raises(DataError, match=r"synthetic:12: expected a slice within \[0, 12\)"):
        source.read(10, 13)


def test_npy_folder_and_list_sources_read_the_same_faces(tmp_path: Path) -> None:
    faces = synthetic_faces(6, seed=1)
    np.save(tmp_path / "faces.npy", faces)
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(folder / f"{i:03d}.png")
    (tmp_path / "list.txt").write_text(
        "# faces, one per line\n" + "".join(f"crops/{i:03d}.png\n\n" for i in range(6))
    )
    for spec in ("faces.npy", "crops", "list.txt"):
        source = open_source(tmp_path / spec)
        assert len(source) == 6, spec
        assert np.array_equal(source.read(2, 5), faces[2:5]), spec
    npy = open_source(tmp_path / "faces.npy")
    assert npy.fingerprint() != open_source(tmp_path / "list.txt").fingerprint()
    raw = (tmp_path / "faces.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"cut.npy: truncated \(\d+ bytes, the header says"):
        open_source(tmp_path / "cut.npy")


def test_bad_sources_are_named(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("a.png\nmissing.png\n")
    Image.fromarray(synthetic_faces(1)[0]).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"list.txt, line 2: missing.png: no such image file"):
        open_source(tmp_path / "list.txt")
    np.save(tmp_path / "f.npy", np.zeros((2, 112, 112, 3), dtype=np.float32))
    with pytest.raises(DataError, match="f.npy: expected dtype uint8"):
        open_source(tmp_path / "f.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="junk.npy: not a readable .npy array"):
        open_source(tmp_path / "junk.npy")
    (tmp_path / "x.csv").write_text("")
    with pytest.raises(DataError, match="x.csv: expected synthetic:N, a .npy array"):
        open_source(tmp_path / "x.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="empty.txt: the list file names no image"):
        open_source(tmp_path / "empty.txt")


# --------------------------------------------------------------------------- shards


def test_shards_equal_one_embed_call_in_input_order(engine, tmp_path: Path) -> None:
    from arcface_lab.runs.stream import embed_to_shards

    source = open_source("synthetic:40")
    result = embed_to_shards(engine, source, tmp_path / "emb", shard_size=16, progress=False)
    assert (result.faces, result.shards, result.dim, result.embedded_now) == (40, 3, TINY_DIM, 40)
    manifest = read_manifest(tmp_path / "emb")
    assert manifest["complete"] and [s["count"] for s in manifest["shards"]] == [16, 16, 8]
    assert manifest["job"]["engine"] == {"chain": ["onnxruntime"], "precision": "fp32"}
    assert {s["backend"] for s in manifest["shards"]} == {"onnxruntime"}
    expected = engine.embed(synthetic_faces(40, seed=7))
    np.testing.assert_allclose(read_shards(tmp_path / "emb"), expected, rtol=0, atol=1e-6)


class _StopAt:
    """A source that raises KeyboardInterrupt when face ``stop_at`` is read (a Ctrl-C)."""

    def __init__(self, inner, stop_at: int) -> None:
        self.inner, self.stop_at = inner, stop_at
        self.name, self.size = inner.name, inner.size

    def __len__(self) -> int:
        return len(self.inner)

    def read(self, start: int, stop: int) -> np.ndarray:
        if start <= self.stop_at < stop:
            raise KeyboardInterrupt
        return self.inner.read(start, stop)

    def fingerprint(self):
        return self.inner.fingerprint()


def test_a_stopped_job_resumes_and_redoes_only_what_is_missing(engine, tmp_path: Path) -> None:
    from arcface_lab.runs.stream import embed_to_shards

    out = tmp_path / "emb"
    source = open_source("synthetic:40")
    with pytest.raises(KeyboardInterrupt):
        embed_to_shards(engine, _StopAt(source, 35), out, shard_size=16, progress=False)
    manifest = read_manifest(out)
    assert not manifest["complete"] and [s["index"] for s in manifest["shards"]] == [0, 1]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shard-00000.npy", "shard-00001.npy"]
    with pytest.raises(DataError, match="incomplete .32 of 40 faces embedded.; run the same"):
        read_shards(out)

    (out / "shard-00001.npy").write_bytes(b"\0" * 200)  # a shard damaged after it was written
    again = embed_to_shards(engine, source, out, shard_size=16, progress=False)
    assert (again.resumed_shards, again.embedded_now) == (1, 24)  # shard 0 kept, 1 and 2 made
    assert list((out / "quarantine").iterdir())
    np.testing.assert_allclose(
        read_shards(out), engine.embed(synthetic_faces(40, seed=7)), rtol=0, atol=1e-6
    )
    done = embed_to_shards(engine, source, out, shard_size=16, progress=False)
    assert (done.resumed_shards, done.embedded_now) == (3, 0)


def test_another_job_on_the_same_folder_is_refused(engine, tmp_path: Path) -> None:
    from arcface_lab.runs.stream import embed_to_shards

    out = tmp_path / "emb"
    embed_to_shards(engine, open_source("synthetic:10"), out, shard_size=4, progress=False)
    before = (out / MANIFEST).read_bytes()
    for source, size, normalize in (("synthetic:11", 4, True), ("synthetic:10", 5, True),
                                    ("synthetic:10", 4, False)):  # fmt: skip
        with pytest.raises(InputError, match="holds the shards of another job"):
            embed_to_shards(
                engine, open_source(source), out, shard_size=size, normalize=normalize,
                progress=False,
            )  # fmt: skip
    assert (out / MANIFEST).read_bytes() == before


def test_one_folder_never_mixes_two_backends(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "a", {"input": "x"}, 8, 4) as writer:
        writer.write(0, np.ones((4, 2)), backend="onnxruntime")
        with pytest.raises(DataError, match="shard 1 was made by torch, the others by onnxruntime"):
            writer.write(1, np.ones((4, 2)), backend="torch")
        assert [s["index"] for s in read_manifest(tmp_path / "a")["shards"]] == [0]


def test_one_writer_at_a_time_and_no_stray_shards(tmp_path: Path) -> None:
    job = {"input": "x"}
    with (
        ShardWriter(tmp_path / "a", job, 8, 4),
        pytest.raises(InputError, match="another job is writing these shards now"),
        ShardWriter(tmp_path / "a", job, 8, 4),
    ):
        pass
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "shard-00000.npy", np.zeros((4, 2), dtype=np.float32))
    with (
        pytest.raises(InputError, match="1 shard file.s. but no manifest.json"),
        ShardWriter(tmp_path / "b", job, 8, 4),
    ):
        pass


def test_a_changed_shard_of_a_complete_folder_is_never_read(engine, tmp_path: Path) -> None:
    from arcface_lab.runs.stream import embed_to_shards

    out = tmp_path / "emb"
    embed_to_shards(engine, open_source("synthetic:8"), out, shard_size=4, progress=False)
    shard = out / "shard-00001.npy"
    arr = np.load(shard)
    arr[0, 0] += 1.0
    np.save(shard, arr)
    with pytest.raises(DataError, match="shard-00001.npy: missing or changed since it was written"):
        read_shards(out)


# --------------------------------------------------------------------------- CLI


def _embed(tiny_path: Path, out: Path, cache: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "arcface_lab.cli", "embed", "--model", str(tiny_path),
           "--backend", "onnxruntime", "--strict", "--cache-dir", str(cache), "--input",
           "synthetic:3000", "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def test_a_killed_embed_resumes_to_the_single_file_result(tiny, tmp_path: Path) -> None:
    """SIGKILL mid-run: no listed shard is bad, and the next run finishes the same faces."""
    import time

    out, cache = tmp_path / "emb", tmp_path / "cache"
    proc = _embed(tiny.path, out, cache, "--shard-size", "256")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / MANIFEST).is_file() and len(read_manifest(out)["shards"]) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    manifest = read_manifest(out)
    listed = len(manifest["shards"])
    assert listed >= 2, "the run never wrote two shards"
    if listed < 12:  # killed before the end (the usual case): it must say so
        assert not manifest["complete"]
    again = _embed(tiny.path, out, cache, "--shard-size", "256", "--quiet")
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert f"3000x{TINY_DIM} float32 in 12 shard(s)" in stdout
    single = _embed(tiny.path, tmp_path / "one.npy", cache)
    _, stderr = single.communicate(timeout=600)
    assert single.returncode == 0, stderr
    np.testing.assert_allclose(read_shards(out), np.load(tmp_path / "one.npy"), rtol=0, atol=1e-6)
    assert json.loads((out / MANIFEST).read_text())["complete"]


def test_the_scale_set_made_on_every_core_equals_the_stream(tmp_path: Path) -> None:
    from arcface_lab.data.stream import SyntheticSource
    from arcface_lab.runs.at_scale import _materialize

    source = SyntheticSource(2100, 5, faces_per_identity=3)
    made = _materialize(source, tmp_path / "faces.npy")  # 3 spans of 1024: a process pool
    assert len(made) == 2100
    for start, stop in ((0, 4), (1020, 1030), (2096, 2100)):
        assert np.array_equal(made.read(start, stop), source.read(start, stop))
    assert np.array_equal(
        source.read(3, 6)[0], synthetic_faces(1, seed=5, start=3, identities=[1])[0]
    )


@pytest.mark.s3
def test_faces_under_an_s3_prefix_stream_like_a_local_folder(
    s3_server, tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SeaweedFS on 127.0.0.1: PNGs under a prefix, a non-image key ignored, same embeddings."""
    import io

    from arcface_lab.cli import main
    from tests import seaweedfs

    seaweedfs.create_bucket(s3_server, "faces")
    client = s3_server.client()
    faces = synthetic_faces(7, seed=2)
    folder = tmp_path / "crops"
    folder.mkdir()
    for i, face in enumerate(faces):
        buf = io.BytesIO()
        Image.fromarray(face).save(buf, format="PNG")
        client.put_object(Bucket="faces", Key=f"team/crops/{i:03d}.png", Body=buf.getvalue())
        (folder / f"{i:03d}.png").write_bytes(buf.getvalue())
    client.put_object(Bucket="faces", Key="team/crops/README.txt", Body=b"not a face")
    common = ["embed", "--model", str(tiny.path), "--backend", "onnxruntime", "--strict",
              "--shard-size", "3", "--quiet", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    s3 = ["--input", "s3://faces/team/crops", "--s3-endpoint", s3_server.endpoint_url]
    assert main([*common, *s3, "--out", str(tmp_path / "s3")]) == 0
    assert "7x16 float32 in 3 shard(s)" in capsys.readouterr().out
    assert main([*common, "--input", str(folder), "--out", str(tmp_path / "local")]) == 0
    np.testing.assert_array_equal(read_shards(tmp_path / "s3"), read_shards(tmp_path / "local"))
    assert read_manifest(tmp_path / "s3")["job"]["input"]["kind"] == "s3"
    # resumed: the same listing is the same job
    assert main([*common, *s3, "--out", str(tmp_path / "s3")]) == 0
    assert "3 resumed" in capsys.readouterr().out
    empty = ["--input", "s3://faces/nothing", "--s3-endpoint", s3_server.endpoint_url]
    assert main([*common, *empty, "--out", str(tmp_path / "none")]) == 2
    assert "s3://faces/nothing: no image objects" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--out", "e.npy", "--shard-size", "8"],
            "--shard-size: needs --out FOLDER for the shards",
        ),
        (["--out", "emb", "--align"], "--align: writes one .npy with its faces index"),
        (["--out", "emb", "--ray", "--mean", "127.5"], "--mean: not taken with --ray"),
        (["--out", "emb", "--shard-size", "0"], "argument --shard-size: expected a positive"),
    ],
)
def test_embed_flags_that_do_not_go_together_are_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    message: str,
) -> None:
    from arcface_lab.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["embed", "--model", "seeded:r18", "--input", "synthetic:2", *extra]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "emb").exists() and not (tmp_path / "e.npy").exists()


def test_scale_params_are_checked() -> None:
    from arcface_lab.config.params import Params
    from arcface_lab.errors import ParamsError

    with pytest.raises(
        ParamsError, match=r"scale.faces: expected 0 .no scale section. or at least 8"
    ):
        Params.from_mapping({"scale": {"faces": 3}}, "p.yaml")
    with pytest.raises(ParamsError, match=r"scale.fars.0: .*YAML reads 1e-3 as text: write 1.0e-3"):
        Params.from_mapping({"scale": {"faces": 8, "fars": ["1e-3"]}}, "p.yaml")
    with pytest.raises(
        ParamsError, match=r"thresholds.tar_delta_max: expected a number in \[0, 1\]"
    ):
        Params.from_mapping({"thresholds": {"tar_delta_max": 2}}, "p.yaml")
