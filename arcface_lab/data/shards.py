"""Embeddings written in shards with a resumable manifest, and read back verified.

A streaming job (:mod:`arcface_lab.runs.stream`) writes the embeddings of faces
``[k * S, (k + 1) * S)`` to ``shard-<k>.npy`` (``S`` the shard size) and records each
shard in ``manifest.json``:

.. code-block:: json

    {"format": "arcface-lab-shards", "version": 1, "job": {...}, "total": 100000,
     "shard_size": 4096, "dim": 512, "complete": false,
     "shards": [{"index": 0, "file": "shard-00000.npy", "start": 0, "count": 4096,
                 "sha256": "..."}, ...]}

A shard is written to a temporary name and renamed into place, then recorded in the
manifest (rewritten the same way); so a shard file the manifest does not list, or one
whose bytes no longer match its sha256, is never taken as done. ``complete`` becomes
true only when every shard is recorded. A job that is stopped and started again with
the same ``job`` (input fingerprint, model, engine, shard size) keeps every verified
shard and makes the rest; a different job on the same folder is refused. One job at a
time writes a folder (a lock beside the manifest).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.files import (
    atomic_path,
    file_sha256,
    naming_a_full_disk,
    quarantine,
    sweep_partials,
    write_json_atomic,
)
from arcface_lab.errors import DataError, InputError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "ShardWriter",
    "iter_shards",
    "open_embeddings",
    "read_manifest",
    "read_shards",
    "write_shard",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "arcface-lab-shards"
VERSION = 1


#: What a full disk under the shard folder is told to do.
_FULL_DISK_HINT = "point the output at a disk with room"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


#: What the manifest keeps of each shard.
SHARD_FIELDS = ("index", "file", "start", "count", "sha256", "backend")


def write_shard(
    folder: Path,
    index: int,
    start: int,
    stop: int,
    embeddings: np.ndarray,
    backend: str | None = None,
) -> dict[str, Any]:
    """Write one shard file atomically (its final name appears only when it is whole).

    Returns its record for :meth:`ShardWriter.record`. Safe to call from any worker
    that sees ``folder``: a shard written twice (a retried task) is the same bytes
    under the same name, and only the manifest says what is done.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != stop - start:
        raise DataError(f"shard {index}: expected {stop - start} embeddings, got shape {emb.shape}")
    name = shard_name(index)
    with (
        naming_a_full_disk(folder, "embedding shards", _FULL_DISK_HINT),
        atomic_path(folder / name, suffix=".npy") as tmp,
        open(tmp, "wb") as f,
    ):
        np.save(f, emb)
    return {
        "index": index,
        "file": name,
        "start": start,
        "count": stop - start,
        "sha256": file_sha256(folder / name),
        "backend": backend,
        "dim": int(emb.shape[1]),
    }


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a shard folder, checked for its format.

    Raises:
        DataError: no manifest, or a file that is not one.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: no {MANIFEST}; not a folder of embedding shards") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable shard manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("version") != VERSION:
        raise DataError(f"{path}: expected version {VERSION}, got {manifest.get('version')!r}")
    return manifest


def _verified_shard(folder: Path, record: dict[str, Any]) -> bool:
    """The shard is there with its recorded sha256; a changed one is quarantined."""
    path = folder / record["file"]
    if not path.is_file():
        return False
    actual = file_sha256(path)
    if actual != record["sha256"]:
        quarantine(path, f"sha256 {actual[:16]}, recorded {record['sha256'][:16]}")
        return False
    return True


@dataclass
class ShardWriter:
    """Writes one job's shards into ``folder``; use as a context manager (it holds the lock).

    Args:
        folder: the shard folder (made when missing).
        job: what the embeddings are of (input fingerprint, model, engine, ...); a folder
            holding another job's shards is refused.
        total: the number of faces.
        shard_size: faces per shard.
    """

    folder: Path
    job: dict[str, Any]
    total: int
    shard_size: int
    dim: int | None = field(default=None, init=False)
    shards: dict[int, dict[str, Any]] = field(default_factory=dict, init=False)
    resumed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.total < 1:
            raise InputError(f"{self.folder}: nothing to write (0 faces)")
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise InputError(
                f"shard_size: expected a positive number of faces, got {self.shard_size!r}",
                argument="shard_size",
            )
        self._lock: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ShardWriter:
        from filelock import FileLock, Timeout

        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.folder}: expected a folder for the shards, got a file")
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / ".manifest.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise InputError(
                f"{self.folder}: another job is writing these shards now (lock {lock.lock_file})"
            ) from None
        self._lock = lock
        try:
            sweep_partials(self.folder)
            self._resume()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            with contextlib.suppress(OSError):
                Path(self._lock.lock_file).unlink()
            self._lock = None

    def _resume(self) -> None:
        """Keep the verified shards of the same job; refuse another job's folder."""
        if not (self.folder / MANIFEST).exists():
            strays = sorted(self.folder.glob("shard-*.npy"))
            if strays:
                raise InputError(
                    f"{self.folder}: holds {len(strays)} shard file(s) but no {MANIFEST}; "
                    "pick an empty folder"
                )
            return
        manifest = read_manifest(self.folder)
        if manifest.get("job") != self.job or manifest.get("shard_size") != self.shard_size:
            raise InputError(
                f"{self.folder}: holds the shards of another job (different input, model, "
                "engine or shard size); pick a new folder, or remove it to start again"
            )
        self.dim = manifest.get("dim")
        for record in manifest.get("shards", []):
            if _verified_shard(self.folder, record):
                self.shards[int(record["index"])] = record
        self.resumed = len(self.shards)
        if self.resumed:
            log.info(
                "%s: resuming; %d shard(s) (%d faces) already done and verified",
                self.folder, self.resumed, self.done_faces,
            )  # fmt: skip

    # ------------------------------------------------------------------ shards

    def spans(self) -> list[tuple[int, int, int]]:
        """Every shard as ``(index, start, stop)``."""
        return [
            (k, start, min(start + self.shard_size, self.total))
            for k, start in enumerate(range(0, self.total, self.shard_size))
        ]

    def pending(self) -> list[tuple[int, int, int]]:
        """The shards still to make, in order."""
        return [s for s in self.spans() if s[0] not in self.shards]

    @property
    def done_faces(self) -> int:
        return sum(int(r["count"]) for r in self.shards.values())

    def write(self, index: int, embeddings: np.ndarray, backend: str | None = None) -> None:
        """Write shard ``index`` (float32 ``(count, D)``), then record it in the manifest."""
        self._held("write")
        _, start, stop = self.spans()[index]
        self._accept(write_shard(self.folder, index, start, stop, embeddings, backend))

    def record(self, record: dict[str, Any]) -> None:
        """Record a shard written by :func:`write_shard` elsewhere (another process or machine).

        Its file is checked against the record's sha256, then as :meth:`write` checks its
        own: its span against this job's, its dimension and backend against the shards
        already recorded.
        """
        self._held("record")
        path = self.folder / record["file"]
        if not path.is_file() or file_sha256(path) != record["sha256"]:
            raise DataError(f"{path}: missing or not the file its worker wrote (sha256)")
        self._accept(record)

    def _held(self, what: str) -> None:
        if self._lock is None:
            raise RuntimeError(f"ShardWriter.{what} outside its `with` block")

    def _accept(self, record: dict[str, Any]) -> None:
        """Check a shard's span, dimension and backend; list it in the manifest."""
        index = int(record["index"])
        _, start, stop = self.spans()[index]
        if (int(record["start"]), int(record["count"])) != (start, stop - start):
            raise DataError(f"shard {index}: expected faces [{start}, {stop}), got "
                            f"{record['start']} + {record['count']}")  # fmt: skip
        if self.dim is None:
            self.dim = int(record["dim"])
        elif int(record["dim"]) != self.dim:
            raise DataError(f"shard {index}: expected dimension {self.dim}, got {record['dim']}")
        made_by = {str(r["backend"]) for r in self.shards.values() if r.get("backend")}
        if record.get("backend") and made_by and record["backend"] not in made_by:
            raise DataError(
                f"shard {index} was made by {record['backend']}, the others by "
                f"{', '.join(sorted(made_by))}: a backend fell back on one worker or run; "
                "name one backend (or pass --strict) so every shard comes from the same engine"
            )
        self.shards[index] = {k: record[k] for k in SHARD_FIELDS if k in record}
        with naming_a_full_disk(self.folder, "embedding shards", _FULL_DISK_HINT):
            self._write_manifest()

    def finish(self) -> dict[str, Any]:
        """Mark the folder complete (every shard recorded); return the manifest."""
        missing = [k for k, _, _ in self.pending()]
        if missing:
            raise DataError(
                f"{self.folder}: {len(missing)} shard(s) not written, first {missing[0]}"
            )
        return self._write_manifest()

    def _write_manifest(self) -> dict[str, Any]:
        complete = not self.pending()
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "job": self.job,
            "total": self.total,
            "shard_size": self.shard_size,
            "dim": self.dim,
            "complete": complete,
            "shards": [self.shards[k] for k in sorted(self.shards)],
        }
        write_json_atomic(self.folder / MANIFEST, manifest)
        return manifest


def iter_shards(folder: str | Path) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Each shard of a complete folder with its record, in order, verified by sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not manifest.get("complete"):
        done = sum(int(r["count"]) for r in manifest.get("shards", []))
        raise DataError(
            f"{folder}: incomplete ({done} of {manifest.get('total')} faces embedded); "
            "run the same embed command again to finish it"
        )
    expected = 0
    for record in manifest["shards"]:
        path = folder / record["file"]
        if int(record["start"]) != expected:
            raise DataError(f"{folder / MANIFEST}: shard {record['file']} starts at "
                            f"{record['start']}, expected {expected}")  # fmt: skip
        if not path.is_file() or file_sha256(path) != record["sha256"]:
            raise DataError(f"{path}: missing or changed since it was written (sha256)")
        emb = np.load(path, allow_pickle=False)
        if emb.shape != (int(record["count"]), int(manifest["dim"])):
            raise DataError(f"{path}: expected shape ({record['count']}, {manifest['dim']}), "
                            f"got {emb.shape}")  # fmt: skip
        expected += int(record["count"])
        yield record, emb


def read_shards(folder: str | Path) -> np.ndarray:
    """All embeddings of a complete shard folder, in input order, as one float32 array."""
    parts = [emb for _, emb in iter_shards(folder)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def open_embeddings(path: str | Path) -> np.ndarray:
    """Embeddings from a ``.npy`` file (memory-mapped) or a complete shard folder (verified).

    Raises:
        DataError: no such file or folder, not a 2-D float array, or shards that fail
            their check (see :func:`iter_shards`).
    """
    path = Path(path)
    if path.is_dir():
        return read_shards(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .npy file or shard folder")
    try:
        emb = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc or 'empty file'})") from None
    if (
        not isinstance(emb, np.ndarray)
        or emb.ndim != 2
        or not np.issubdtype(emb.dtype, np.floating)
    ):
        raise DataError(
            f"{path}: expected float (N, D) embeddings, got "
            f"{getattr(emb, 'dtype', '?')} {getattr(emb, 'shape', '?')}"
        )
    return emb
