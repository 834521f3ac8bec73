"""Files: content digests, atomic writes and verified caches, one idiom for the package.

Every file a reader may take as complete (an engine artifact, a manifest, an ONNX
export, a run record, a report) is written through :func:`atomic_path`: the bytes go
to a hidden ``.<name>.<random>.partial`` beside the destination, are fsynced, and are
``os.replace``-d into place only when the writer finished; a failed or killed writer
leaves at most a hidden ``.partial`` that :func:`sweep_partials` removes. The
destination's mode follows the umask, as a plain ``open`` would give it.

A *derived* file the workbench reads back (the ONNX export of a checkpoint, a
rewritten ONNX, seeded weights) is made through :func:`cached`: its sha256 is
recorded beside it when written and checked before every use; a copy that does not
match is quarantined (a bounded number kept) and made again, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "PARTIAL_SUFFIX",
    "QUARANTINE_KEEP",
    "Digest",
    "atomic_path",
    "cached",
    "default_cache_root",
    "digest_path",
    "file_digest",
    "file_sha256",
    "fsync_dir",
    "partial_name",
    "quarantine",
    "sweep_partials",
    "verified",
    "write_bytes_atomic",
    "write_json_atomic",
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


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/arcface_lab`` when that is set, else ``~/.cache/arcface_lab``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "arcface_lab"


def partial_name(dest: str | os.PathLike[str], suffix: str = "") -> Path:
    """A fresh hidden temporary name beside ``dest`` (same folder, so the rename is atomic)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{suffix}{PARTIAL_SUFFIX}")


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
    with atomic_path(path, suffix) as tmp:
        make(tmp)
        digest = file_sha256(tmp)
    write_text_atomic(digest_path(path), digest + "\n")
    return path
