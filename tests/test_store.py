"""Tests of arcface_lab.store against a real SeaweedFS S3 server (no mocks of S3)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import arcface_lab
from arcface_lab import store as st
from arcface_lab.config.params import Params
from arcface_lab.errors import EngineIntegrityError, InputError, ParamsError, StoreError

try:
    from tests import seaweedfs
except ImportError:  # tests/ is not a package: it is on sys.path itself
    import seaweedfs  # type: ignore[no-redef]

REPO_ROOT = Path(arcface_lab.__file__).resolve().parents[1]
INPUTS: dict[str, Any] = {
    "onnx_sha256": "ab" * 32,
    "backend": "onnxruntime",
    "precision": {"compute": "fp32", "io": "fp32"},
    "profile": {"min": 1, "opt": 8, "max": 32},
    "library_version": "1.32.0",
    "device": {"kind": "cpu", "model": "test", "isa": ["avx2", "avx512f"]},
    "flags": {"tf32": False},
}


def inputs_for(name: str) -> dict[str, Any]:
    """INPUTS with a distinct ONNX hash, so each test gets its own key."""
    return {**INPUTS, "onnx_sha256": hashlib.sha256(name.encode()).hexdigest()}


def counting_builder(markers: Path, payload: bytes) -> Callable[[Path], Mapping[str, Any]]:
    """A build function that writes ``payload`` and leaves one marker file per call."""
    markers.mkdir(parents=True, exist_ok=True)

    def build(path: Path) -> Mapping[str, Any]:
        (markers / uuid.uuid4().hex).touch()
        path.write_bytes(payload)
        return {"builder": "test"}

    return build


def builds(markers: Path) -> int:
    return len(list(markers.iterdir())) if markers.exists() else 0


def leftovers(root: Path) -> list[Path]:
    """Files under a local store that are neither entries nor lock files."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name not in (st.ARTIFACT_NAME, st.MANIFEST_NAME)
        and p.parent.name != "locks"
    ]


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _dummy_credentials(aws_env: None) -> None:
    """Every test here sees the dummy AWS credentials (conftest's ``aws_env``)."""


@pytest.fixture
def remote(s3_server: seaweedfs.SeaweedS3, request: pytest.FixtureRequest) -> st.S3Store:
    """An S3Store on the shared server, with a prefix of its own."""
    prefix = f"t/{request.node.name}-{uuid.uuid4().hex[:8]}"
    return st.S3Store("engines", prefix, endpoint_url=s3_server.endpoint_url)


def remote_objects(server: seaweedfs.SeaweedS3, remote: st.S3Store) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=remote.bucket, Prefix=remote.prefix + "/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


# --------------------------------------------------------------------------------- keys, urls
def test_artifact_key_is_stable_across_dict_order() -> None:
    shuffled = dict(reversed(list(INPUTS.items())))
    shuffled["profile"] = {"max": 32, "opt": 8, "min": 1}
    key = st.artifact_key(INPUTS)
    assert st.artifact_key(shuffled) == key
    assert len(key) == 64 and int(key, 16) >= 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("onnx_sha256", "cd" * 32),
        ("backend", "tensorrt"),
        ("precision", {"compute": "fp16", "io": "fp32"}),
        ("profile", {"min": 1, "opt": 16, "max": 32}),
        ("library_version", "1.32.1"),
        ("device", {"kind": "cuda", "name": "H100", "compute_capability": "9.0"}),
        ("flags", {"tf32": True}),
    ],
)
def test_artifact_key_changes_with_every_input(field: str, value: Any) -> None:
    assert st.artifact_key({**INPUTS, field: value}) != st.artifact_key(INPUTS)


@pytest.mark.parametrize(
    "value, message",
    [
        ({1, 2}, "key inputs['flags']: expected a JSON value"),
        (b"raw", "got bytes"),
        (float("nan"), "expected a finite number"),
        ({3: "x"}, "key inputs['flags']: expected string keys, got 3"),
        ([object()], "key inputs['flags'][0]: expected a JSON value"),
    ],
)
def test_artifact_key_rejects_non_json_values(value: Any, message: str) -> None:
    with pytest.raises(InputError) as info:
        st.artifact_key({**INPUTS, "flags": value})
    assert message in str(info.value)


def test_artifact_key_rejects_a_non_mapping() -> None:
    with pytest.raises(InputError, match="key inputs: expected a mapping, got list"):
        st.artifact_key([("backend", "x")])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url, expected",
    [
        ("s3://engines", ("engines", "")),
        ("s3://engines/", ("engines", "")),
        ("s3://engines/team/arcface/", ("engines", "team/arcface")),
        ("s3://my.bucket-1/p", ("my.bucket-1", "p")),
    ],
)
def test_parse_store_url_accepts_s3_urls(url: str, expected: tuple[str, str]) -> None:
    assert st.parse_store_url(url) == expected


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://engines/x", "store URL 'http://engines/x': expected s3://BUCKET"),
        ("/tmp/engines", "store URL '/tmp/engines': expected s3://BUCKET"),
        ("s3://", "bucket '' is not a valid S3 bucket name"),
        ("s3://Bad_Bucket/x", "bucket 'Bad_Bucket' is not a valid S3 bucket name"),
    ],
)
def test_parse_store_url_rejects_other_forms(url: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        st.parse_store_url(url)
    assert message in str(info.value)
    assert "s3://BUCKET/PREFIX" in str(info.value)


def test_device_fingerprint_on_cpu_lists_inference_isa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # every flag of the file
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\n"
        "flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile amx_int8 f16c pdpe1gb\n"
    )
    fp = st.device_fingerprint(cpuinfo)
    assert fp["kind"] == "cpu" and fp["model"] == "Test CPU 9000"
    assert fp["isa"] == ["amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512f", "f16c", "fma"]
    fallback = st.device_fingerprint(tmp_path / "missing")
    assert fallback["kind"] == "cpu" and fallback["model"] and fallback["isa"] == []
    assert st.device_fingerprint() == st.device_fingerprint()  # real /proc/cpuinfo, stable


def test_default_local_root_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert st.default_local_root() == tmp_path / "arcface_lab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert st.default_local_root() == Path.home() / ".cache" / "arcface_lab"


# --------------------------------------------------------------------------------- local store
def put_local(local: st.LocalStore, name: str, payload: bytes, tmp_path: Path) -> st.Artifact:
    inputs = inputs_for(name)
    key = st.artifact_key(inputs)
    src = tmp_path / f"{name}.bin"
    src.write_bytes(payload)
    sha256, size = st.file_digest(src)
    return local.put(key, src, st.make_manifest(key, inputs, sha256, size, {"note": name}))


def test_local_put_get_round_trip(tmp_path: Path) -> None:
    local = st.LocalStore(tmp_path / "cache")
    put = put_local(local, "round-trip", b"engine bytes" * 100, tmp_path)
    got = local.get(put.key)
    assert got is not None and got.origin == "local"
    assert got.path == tmp_path / "cache" / put.key[:2] / put.key / "artifact.bin"
    assert got.path.read_bytes() == b"engine bytes" * 100
    assert (got.sha256, got.size) == (put.sha256, 1200)
    manifest = json.loads((got.path.parent / "manifest.json").read_text())
    assert manifest["schema"] == st.SCHEMA_VERSION and manifest["key"] == put.key
    assert manifest["inputs"] == inputs_for("round-trip") and manifest["extra"] == {
        "note": "round-trip"
    }
    assert manifest["built_on"]["hostname"] and manifest["created_at"].endswith("+00:00")
    assert leftovers(tmp_path / "cache") == []


def test_local_put_rejects_a_file_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    local = st.LocalStore(tmp_path / "cache")
    key = st.artifact_key(INPUTS)
    src = tmp_path / "a.bin"
    src.write_bytes(b"abc")
    manifest = st.make_manifest(key, INPUTS, "00" * 32, 3, {})
    with pytest.raises(EngineIntegrityError) as info:
        local.put(key, src, manifest)
    assert f"artifact {src}: expected 3 bytes with sha256 {'00' * 32}" in str(info.value)
    assert local.get(key) is None and leftovers(tmp_path / "cache") == []


def test_local_get_rejects_a_malformed_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"artifact key '\.\./x': expected 64 lowercase hex"):
        st.LocalStore(tmp_path).get("../x")


def test_local_corrupt_artifact_is_quarantined(tmp_path: Path) -> None:
    local = st.LocalStore(tmp_path / "cache")
    art = put_local(local, "flipped", b"0123456789", tmp_path)
    art.path.write_bytes(b"0123456780")  # same size, different bytes
    warnings: list[str] = []
    assert local.get(art.key, warnings=warnings) is None
    assert not art.path.parent.exists()
    quarantined = list((tmp_path / "cache" / "quarantine").glob(f"{art.key}-*"))
    assert len(quarantined) == 1
    assert (quarantined[0] / "artifact.bin").read_bytes() == b"0123456780"
    assert len(warnings) == 1 and f"local artifact {art.key} was corrupt" in warnings[0]
    assert f"sha256 {art.sha256}" in warnings[0] and "quarantined at" in warnings[0]


def test_truncated_local_artifact_is_quarantined_then_rebuilt(tmp_path: Path) -> None:
    local = st.LocalStore(tmp_path / "cache")
    store = st.EngineStore(local)
    markers = tmp_path / "markers"
    build = counting_builder(markers, b"x" * 4096)
    first = store.fetch_or_build(INPUTS, build)
    assert first.origin == "built" and first.warnings == []
    with open(first.path, "r+b") as f:
        f.truncate(100)
    again = store.fetch_or_build(INPUTS, build)
    assert again.origin == "built" and builds(markers) == 2
    assert again.path.read_bytes() == b"x" * 4096
    assert len(again.warnings) == 1 and "expected 4096 bytes" in again.warnings[0]
    assert "got 100 bytes" in again.warnings[0] and "quarantined at" in again.warnings[0]
    [moved] = (tmp_path / "cache" / "quarantine").iterdir()
    assert (moved / "artifact.bin").stat().st_size == 100
    assert store.fetch_or_build(INPUTS, build).origin == "local" and builds(markers) == 2


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    local = st.LocalStore(tmp_path / "cache")
    store = st.EngineStore(local)

    def build(path: Path) -> None:
        path.write_bytes(b"half an engine")
        (path.parent / "timing.cache").write_bytes(b"scratch")
        raise RuntimeError("builder exploded")

    with pytest.raises(RuntimeError, match="builder exploded"):
        store.fetch_or_build(INPUTS, build)
    assert leftovers(tmp_path / "cache") == []
    assert local.get(st.artifact_key(INPUTS)) is None


@pytest.mark.s3
def test_failed_build_publishes_nothing(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3
) -> None:
    def build(path: Path) -> None:
        path.write_bytes(b"half an engine")
        raise RuntimeError("builder exploded")

    with pytest.raises(RuntimeError, match="builder exploded"):
        st.EngineStore(st.LocalStore(tmp_path / "cache"), remote).fetch_or_build(INPUTS, build)
    assert remote_objects(s3_server, remote) == []
    assert leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda path: None, "expected a non-empty artifact at"),
        (lambda path: path.write_bytes(b"x") and ["extra"], "expected None or a mapping"),
        (lambda path: path.write_bytes(b"x") and {"t": {1, 2}}, "build result['t']"),
    ],
)
def test_build_contract_violations_raise_store_error(
    tmp_path: Path, build: Callable[[Path], Any], message: str
) -> None:
    store = st.EngineStore(st.LocalStore(tmp_path / "cache"))
    with pytest.raises(StoreError) as info:
        store.fetch_or_build(INPUTS, build)
    assert f"build for key {st.artifact_key(INPUTS)}" in str(info.value)
    assert message in str(info.value)
    assert leftovers(tmp_path / "cache") == []


def test_threads_in_one_process_build_once(tmp_path: Path) -> None:
    store = st.EngineStore(st.LocalStore(tmp_path / "cache"), lock_timeout=30)
    markers = tmp_path / "markers"
    inner = counting_builder(markers, b"t" * 1000)

    def slow(path: Path) -> Mapping[str, Any]:
        time.sleep(0.3)
        return inner(path)

    results: list[st.Artifact] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.fetch_or_build(INPUTS, slow)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert builds(markers) == 1
    assert sorted(a.origin for a in results) == ["built", "local", "local", "local"]


# ------------------------------------------------------------------------------ S3, processes
WORKER = textwrap.dedent("""
    import json, sys, threading, time, uuid
    from pathlib import Path
    from arcface_lab.store import EngineStore, LocalStore, S3Store

    cfg = json.loads(sys.argv[1])
    remote = S3Store(cfg["bucket"], cfg["prefix"], endpoint_url=cfg["endpoint"])
    store = EngineStore(LocalStore(cfg["root"]), remote, lock_timeout=60)

    def build(path):
        Path(cfg["markers"], uuid.uuid4().hex).touch()
        time.sleep(cfg["delay"])
        path.write_bytes(cfg["payload"].encode())
        return {"builder": "worker"}

    results = []

    def run():
        art = store.fetch_or_build(cfg["inputs"], build)
        results.append({"origin": art.origin, "sha256": art.sha256, "warnings": art.warnings})

    threads = [threading.Thread(target=run) for _ in range(cfg["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    print(json.dumps(results))
    """)


def start_worker(
    remote: st.S3Store, root: Path, markers: Path, **cfg: Any
) -> subprocess.Popen[str]:
    markers.mkdir(parents=True, exist_ok=True)
    config = {
        "bucket": remote.bucket,
        "prefix": remote.prefix,
        "endpoint": remote.endpoint_url,
        "root": str(root),
        "markers": str(markers),
        "inputs": INPUTS,
        "threads": 1,
        "delay": 0.0,
        "payload": "engine from a worker",
        **cfg,
    }
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )


def worker_results(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return list(json.loads(out))


@pytest.mark.s3
def test_miss_builds_publishes_and_another_process_fetches_remote(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3
) -> None:
    store = st.EngineStore(st.LocalStore(tmp_path / "a"), remote, strict=True)
    markers = tmp_path / "markers"
    built = store.fetch_or_build(INPUTS, counting_builder(markers, b"plan" * 1000))
    assert built.origin == "built" and built.warnings == [] and builds(markers) == 1
    key = built.key
    assert remote_objects(s3_server, remote) == [
        f"{remote.prefix}/{key}/artifact.bin",
        f"{remote.prefix}/{key}/manifest.json",
    ]
    assert remote.get_manifest(key) == built.manifest

    [fetched] = worker_results(start_worker(remote, tmp_path / "b", markers))
    assert fetched == {"origin": "remote", "sha256": built.sha256, "warnings": []}
    assert builds(markers) == 1
    fresh = st.LocalStore(tmp_path / "b").get(key)
    assert fresh is not None and fresh.path.read_bytes() == b"plan" * 1000
    assert leftovers(tmp_path / "b") == []


@pytest.mark.s3
def test_publish_is_create_only(tmp_path: Path, remote: st.S3Store) -> None:
    art = st.EngineStore(st.LocalStore(tmp_path / "a"), remote).fetch_or_build(
        INPUTS, counting_builder(tmp_path / "m", b"first")
    )
    other = tmp_path / "other.bin"
    other.write_bytes(b"second build, different bytes")
    sha256, size = st.file_digest(other)
    manifest = st.make_manifest(art.key, INPUTS, sha256, size, {})
    assert remote.put(art.key, other, manifest) is False  # 412: theirs is kept and verified
    got = remote.get(art.key, tmp_path)
    assert got is not None and got.path.read_bytes() == b"first"


@pytest.mark.s3
def test_write_then_verify_fallback(tmp_path: Path, remote: st.S3Store) -> None:
    remote._conditional_writes = False  # as after a server answered NotImplemented
    src = tmp_path / "a.bin"
    src.write_bytes(b"fallback")
    key = st.artifact_key(INPUTS)
    sha256, size = st.file_digest(src)
    manifest = st.make_manifest(key, INPUTS, sha256, size, {})
    assert remote.put(key, src, manifest) is True
    assert remote.put(key, src, manifest) is False
    got = remote.get(key, tmp_path)
    assert got is not None and got.sha256 == sha256


@pytest.mark.s3
@pytest.mark.parametrize("orphan", [b"orphan", b"mine"], ids=["other-bytes", "same-bytes"])
def test_artifact_left_without_manifest_is_published_again(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3, orphan: bytes
) -> None:
    """A writer died between its two uploads: the key is not blocked for ever."""
    key = st.artifact_key(INPUTS)
    s3_server.client().put_object(
        Bucket=remote.bucket, Key=remote.object_key(key, "artifact.bin"), Body=orphan
    )
    src = tmp_path / "a.bin"
    src.write_bytes(b"mine")
    manifest = st.make_manifest(key, INPUTS, *st.file_digest(src), {})
    assert remote.put(key, src, manifest) is True
    remote.verify(key)
    got = remote.get(key, tmp_path / "got")
    assert got is not None and got.path.read_bytes() == b"mine"
    assert remote.put(key, src, manifest) is False  # published now: create-only again


@pytest.mark.s3
def test_corrupt_remote_manifest_is_an_integrity_error(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3
) -> None:
    key = st.artifact_key(INPUTS)
    s3_server.client().put_object(
        Bucket=remote.bucket, Key=remote.object_key(key, "manifest.json"), Body=b"{not json"
    )
    with pytest.raises(EngineIntegrityError) as info:
        remote.get(key, tmp_path)
    assert f"manifest {remote.url(key, 'manifest.json')}: expected JSON" in str(info.value)


@pytest.mark.s3
def test_corrupt_remote_object_is_detected_and_rebuilt(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3
) -> None:
    good = b"good engine " * 50
    first = st.EngineStore(st.LocalStore(tmp_path / "a"), remote).fetch_or_build(
        INPUTS, counting_builder(tmp_path / "m1", good)
    )
    corrupt = b"CORRUPTBYTES" * 50  # same size, different bytes
    s3_server.client().put_object(
        Bucket=remote.bucket, Key=remote.object_key(first.key, "artifact.bin"), Body=corrupt
    )
    with pytest.raises(EngineIntegrityError) as info:
        remote.get(first.key, tmp_path)
    assert f"artifact {remote.url(first.key, 'artifact.bin')}: expected 600 bytes" in str(
        info.value
    )
    assert f"sha256 {first.sha256}" in str(info.value)

    root = tmp_path / "b"
    markers = tmp_path / "m2"
    strict = st.EngineStore(st.LocalStore(root), remote, strict=True)
    with pytest.raises(EngineIntegrityError, match="expected 600 bytes with sha256"):
        strict.fetch_or_build(INPUTS, counting_builder(markers, good))
    assert builds(markers) == 0

    art = st.EngineStore(st.LocalStore(root), remote).fetch_or_build(
        INPUTS, counting_builder(markers, good)
    )
    assert art.origin == "built" and builds(markers) == 1
    assert art.path.read_bytes() == good
    assert "remote copy is corrupt, rebuilding locally" in art.warnings[0]
    assert "is corrupt and was not replaced" in art.warnings[1]
    assert all(corrupt not in p.read_bytes() for p in root.rglob("*") if p.is_file())
    assert leftovers(root) == []


@pytest.mark.s3
def test_concurrent_processes_and_threads_build_once(
    tmp_path: Path, remote: st.S3Store, s3_server: seaweedfs.SeaweedS3
) -> None:
    root, markers = tmp_path / "shared", tmp_path / "markers"
    procs = [
        start_worker(remote, root, markers, threads=2, delay=1.0, payload=f"built by {i}")
        for i in range(2)
    ]
    results = [r for p in procs for r in worker_results(p)]
    assert builds(markers) == 1
    assert sorted(r["origin"] for r in results) == ["built", "local", "local", "local"]
    assert len({r["sha256"] for r in results}) == 1 and all(r["warnings"] == [] for r in results)
    art = st.LocalStore(root).get(st.artifact_key(INPUTS))
    assert art is not None and art.sha256 == results[0]["sha256"]
    assert leftovers(root) == [] and list((root / "tmp").iterdir()) == []
    assert len(remote_objects(s3_server, remote)) == 2
    assert remote.get_manifest(art.key) == art.manifest


@pytest.mark.s3
def test_unreachable_server_is_a_warning_and_a_local_build(tmp_path: Path) -> None:
    pytest.importorskip("boto3")
    endpoint = f"http://127.0.0.1:{seaweedfs.closed_port()}"
    remote = st.S3Store("engines", "p", endpoint_url=endpoint)
    markers = tmp_path / "markers"
    art = st.EngineStore(st.LocalStore(tmp_path / "a"), remote).fetch_or_build(
        INPUTS, counting_builder(markers, b"offline")
    )
    assert art.origin == "built" and builds(markers) == 1
    [warning] = art.warnings
    assert "remote store unavailable, building locally" in warning
    assert f"s3://engines/p/{art.key}/manifest.json at {endpoint}" in warning

    strict = st.EngineStore(st.LocalStore(tmp_path / "b"), remote, strict=True)
    with pytest.raises(StoreError) as info:
        strict.fetch_or_build(INPUTS, counting_builder(markers, b"offline"))
    assert f"S3 get_object of s3://engines/p/{art.key}/manifest.json at {endpoint}" in str(
        info.value
    )
    assert "Could not connect" in str(info.value)


@pytest.mark.s3
def test_a_hung_endpoint_falls_back_within_the_bound_and_says_so(tmp_path: Path) -> None:
    """A server that accepts TCP and never answers: bounded by the timeouts, then local."""
    import socket

    pytest.importorskip("boto3")
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes handshakes; nothing ever reads or answers
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        params = Params.from_mapping(
            {
                "store": {
                    "local": str(tmp_path / "local"),
                    "s3": "s3://engines/p",
                    "s3_endpoint": endpoint,
                    "read_timeout_s": 0.5,
                }
            },
            "p.yaml",
        )
        store = st.open_store(**params.store.settings())
        assert isinstance(store.remote, st.S3Store)
        art = store.fetch_or_build(INPUTS, counting_builder(tmp_path / "m", b"hung"))
    assert art.origin == "built"
    [warning] = art.warnings
    assert "remote store unavailable, building locally" in warning
    assert "gave up after 2 attempt(s) of 3 s to connect and 0.5 s to answer" in warning
    assert "Read timeout" in warning


def test_store_timeouts_come_from_params_and_are_checked() -> None:
    store = Params.from_mapping({"store": {"connect_timeout_s": 1, "max_attempts": 4}}).store
    assert store.settings()["connect_timeout_s"] == 1.0 and store.settings()["max_attempts"] == 4
    with pytest.raises(ParamsError, match=r"store.read_timeout_s: expected a number in \(0, 600\]"):
        Params.from_mapping({"store": {"read_timeout_s": 0}}, "p.yaml")


@pytest.mark.s3
def test_wrong_credentials_are_a_warning_and_a_local_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("boto3")
    credentials = ("goodkey", "goodsecret")
    with seaweedfs.running(tmp_path / "weed", credentials=credentials, stop_grace=2.0) as server:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "goodkey")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "goodsecret")
        seaweedfs.create_bucket(server, "locked")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrongkey")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrongsecret")
        remote = st.S3Store("locked", "p", endpoint_url=server.endpoint_url)
        art = st.EngineStore(st.LocalStore(tmp_path / "a"), remote).fetch_or_build(
            INPUTS, counting_builder(tmp_path / "m", b"no access")
        )
        assert art.origin == "built"
        [warning] = art.warnings
        assert "remote store unavailable, building locally" in warning
        assert "InvalidAccessKeyId" in warning and "wrongsecret" not in warning

        strict = st.EngineStore(st.LocalStore(tmp_path / "b"), remote, strict=True)
        with pytest.raises(
            StoreError, match=r"S3 get_object of s3://locked/p/.*InvalidAccessKeyId"
        ):
            strict.fetch_or_build(INPUTS, counting_builder(tmp_path / "m", b"no access"))


def test_missing_boto3_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StoreError) as info:
        st.S3Store.from_url("s3://engines/team")
    assert "S3 store s3://engines/team: boto3 is not installed; pip install boto3" in str(
        info.value
    )
