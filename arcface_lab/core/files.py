"""Files: content digests, atomic writes and verified caches, one idiom for the package.

Every file a reader may take as complete (an engine artifact, a manifest, an ONNX
export, a run record, a report) is written through :func:`atomic_path`: the bytes go
to a hidden ``.<name>.<pid>-<random>.partial`` beside the destination, are fsynced, and are
``os.replace``-d into place only when the writer finished; a failed or killed writer
leaves at most a hidden ``.partial`` that :func:`sweep_partials` (under a lock) or
:func:`sweep_dead_partials` (its writer's pid is gone) removes. The
destination's mode follows the umask, as a plain ``open`` would give it.

A *derived* file the workbench reads back (the ONNX export of a checkpoint, a
rewritten ONNX, seeded weights) is made through :func:`cached`: its sha256 is
recorded beside it when written and checked before every use; a copy that does not
match is quarantined (a bounded number kept) and made again, never used.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import io
import json
import logging
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from arcface_lab.errors import DiskFullError, EngineError

__all__ = [
    "PARTIAL_SUFFIX",
    "QUARANTINE_KEEP",
    "Digest",
    "array_sha256",
    "atomic_path",
    "cached",
    "default_cache_root",
    "digest_path",
    "file_digest",
    "file_sha256",
    "fsync_dir",
    "naming_a_full_disk",
    "out_of_space",
    "partial_name",
    "quarantine",
    "read_tar_members",
    "sweep_dead_partials",
    "sweep_partials",
    "verified",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_tar",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

#: The suffix of every temporary name; such a file is never complete.
PARTIAL_SUFFIX = ".partial"
_CHUNK = 1 << 20


class Digest(NamedTuple):
    """A file's sha256 (hex) and size in bytes."""

    sha256: str
    size: int


def file_digest(path: str | os.PathLike[str]) -> Digest:
    """The sha256 and size of a file, read in 1 MiB chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Digest(digest.hexdigest(), size)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes."""
    return file_digest(path).sha256


def array_sha256(*arrays: Any) -> str:
    """The hex sha256 of numpy arrays: each one's dtype, shape and C-ordered bytes."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/arcface_lab`` when that is set, else ``~/.cache/arcface_lab``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "arcface_lab"


def partial_name(dest: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh hidden temporary name beside ``dest`` (same folder, so the rename is atomic).

    The name carries the writer's pid (``.<name>.<pid>-<random><suffix>.partial``), so a
    partial whose writer was killed can be told from one still being written.
    """
    dest = Path(dest)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return dest.with_name(f".{dest.name}.{tag}{suffix}{PARTIAL_SUFFIX}")


def _writer_alive(partial: Path, name: str) -> bool:
    """Whether the process that named ``partial`` (see :func:`partial_name`) still runs.

    A name without a pid (written by an older version) counts as alive: it is left alone.
    """
    pid_text = partial.name[len(name) + 2 :].split("-", 1)[0]
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: a live process of another user
        return True
    return True


def sweep_dead_partials(dest: str | os.PathLike[str]) -> list[Path]:
    """Remove the partials of ``dest`` whose writer is dead (killed mid-write); return them.

    Safe beside live writers on this machine: a partial is removed only when the pid in
    its name no longer exists. (A folder shared by several machines cannot tell.)
    """
    dest = Path(dest)
    removed = []
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*{PARTIAL_SUFFIX}"):
        if stale.is_file() and not _writer_alive(stale, dest.name):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    if removed:
        log.info("removed %d partial file(s) of %s left by killed writers", len(removed), dest)
    return removed


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be fsynced)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; it becomes ``dest`` only if the block succeeds.

    ``suffix`` goes before ``.partial`` for writers that choose a format by the file's
    name (``torch.save``, ``onnx.save``). The block must create the file; it is fsynced,
    renamed over ``dest`` and the folder fsynced. On any exception the temporary is
    removed and ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(dest, suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(
    path: str | os.PathLike[str], payload: Any, default: Callable[[Any], Any] | None = None
) -> None:
    """Write ``payload`` as indented JSON (``default`` for other types) via :func:`atomic_path`."""
    text = json.dumps(payload, indent=2, default=default)
    write_text_atomic(path, text + "\n")


def sweep_partials(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.partial`` files of dead writers in ``folder``; return what was removed.

    Call it only where no live writer can own them (under the folder's lock).
    """
    removed = []
    for stale in Path(folder).glob(f".*{PARTIAL_SUFFIX}"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_SPACE_TEXT = ("no space left", "disk quota exceeded", "file too large")
#: With less free space than this, a failed write is put down to a full disk.
_LOW_SPACE = 1 << 20


def out_of_space(exc: BaseException, folder: str | os.PathLike[str]) -> bool:
    """Whether ``exc`` (raised while writing in ``folder``) means the disk had no room.

    Libraries report a full disk in their own words (protobuf: "serialization failed"),
    so besides ``ENOSPC``/``EDQUOT``/``EFBIG`` anywhere in the exception chain, a failure
    with under 1 MiB left in ``folder`` counts.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        if any(text in str(current).lower() for text in _NO_SPACE_TEXT):
            return True
        current = current.__cause__ or current.__context__
    try:
        return shutil.disk_usage(folder).free < _LOW_SPACE
    except OSError:
        return False


@contextlib.contextmanager
def naming_a_full_disk(folder: str | os.PathLike[str], what: str, hint: str) -> Iterator[None]:
    """Turn any failure of the block that :func:`out_of_space` explains into :class:`DiskFullError`.

    The one-line error names ``folder``, what was being written and ``hint`` (where to
    point the writer instead); other failures pass through unchanged. Put it *inside*
    the context that removes the partial file (the free space is judged when the
    failure passes through) and outside it too when the commit itself may fail.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not out_of_space(exc, folder):
            raise
        try:
            free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise DiskFullError(
            f"{folder}: no room to write {what} ({reason}; {free}); {hint}"
        ) from exc


#: Bad copies of a derived file kept for inspection, per file name (older ones removed).
QUARANTINE_KEEP = 2
DIGEST_SUFFIX = ".sha256"


def digest_path(path: str | os.PathLike[str]) -> Path:
    """Where the sha256 of a derived file is recorded (``<name>.sha256`` beside it)."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def quarantine(path: str | os.PathLike[str], reason: str) -> Path | None:
    """Move ``path`` to ``quarantine/`` beside it, keeping the newest :data:`QUARANTINE_KEEP`.

    Returns where it went (None when it could not be moved and was removed instead).
    """
    path = Path(path)
    folder = path.parent / "quarantine"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = folder / f"{path.name}.{stamp}.{uuid.uuid4().hex[:6]}"
    dest: Path | None = target
    try:
        folder.mkdir(exist_ok=True)
        os.replace(path, target)
    except OSError:
        path.unlink(missing_ok=True)
        dest = None
    digest_path(path).unlink(missing_ok=True)
    log.warning("%s: %s; moved to %s and made again", path, reason, dest or "(removed)")
    kept = sorted(folder.glob(f"{path.name}.*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[QUARANTINE_KEEP:]:
        old.unlink(missing_ok=True)
    return dest


def verified(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` matches the sha256 recorded beside it.

    A file with no record, or one that does not match (truncated, overwritten, edited),
    is quarantined (:func:`quarantine`) and False returned: the caller makes it again.
    """
    path = Path(path)
    if not path.is_file():
        return False
    record = digest_path(path)
    expected = record.read_text().strip() if record.is_file() else ""
    actual = file_sha256(path)
    if expected and actual == expected:
        return True
    why = f"sha256 {actual[:16]}, recorded {expected[:16]}" if expected else "no recorded sha256"
    quarantine(path, why)
    return False


def cached(path: str | os.PathLike[str], make: Callable[[Path], object], suffix: str = "") -> Path:
    """``path``, made by ``make(tmp)`` unless it is there and :func:`verified`.

    ``make`` writes the file at the temporary path it is given (``suffix`` goes before
    ``.partial``, for writers that choose a format by name); the file is renamed into
    place and its sha256 recorded beside it, so the next reader can check it.
    """
    path = Path(path)
    if verified(path):
        return path
    if path.parent.is_dir():
        sweep_dead_partials(path)
    hint = "free some space, or set --cache-dir (XDG_CACHE_HOME) to a disk with room"
    # Judged inside the partial's lifetime too: once it is removed the disk has room again,
    # and a library's own error (protobuf's "serialization failed") carries no errno.
    with naming_a_full_disk(path.parent, path.name, hint):
        with atomic_path(path, suffix) as tmp, naming_a_full_disk(path.parent, path.name, hint):
            make(tmp)
            digest = file_sha256(tmp)
        write_text_atomic(digest_path(path), digest + "\n")
    return path


def write_tar(dest: str | os.PathLike[str], members: Mapping[str, Path | bytes]) -> None:
    """An uncompressed tar at ``dest`` holding ``members`` (name -> file or bytes), in order.

    The artifact format of a model that is several files (an IR and its weights, an ncnn
    ``.param`` and ``.bin``): the engine store keeps and verifies one file per artifact.
    """
    with tarfile.open(dest, "w") as tar:
        for name, value in members.items():
            if isinstance(value, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
            else:
                tar.add(value, arcname=name, recursive=False)


def read_tar_members(
    path: str | os.PathLike[str], names: Sequence[str], what: str
) -> dict[str, bytes]:
    """The bytes of ``names`` in the tar at ``path``; nothing else in it is read or extracted.

    Only regular files are read, so a link or a device member can never point outside.

    Raises:
        EngineError: not a tar, or a member missing or not a regular file (``what`` says
            which artifact was expected).
    """
    try:
        with tarfile.open(path, "r:") as tar:
            data = {}
            for name in names:
                member = tar.getmember(name)
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise KeyError(f"{name} is not a regular file")
                data[name] = handle.read()
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise EngineError(f"{what}: {path}: not a readable artifact ({exc})") from None
    return data
