"""The local store: artifacts in a folder, written atomically and verified before use."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.files import (
    atomic_path,
    default_cache_root,
    file_digest,
    sweep_partials,
    write_bytes_atomic,
)
from arcface_lab.errors import EngineIntegrityError, StoreError
from arcface_lab.store.keys import (
    ARTIFACT_NAME,
    MANIFEST_NAME,
    Artifact,
    check_digest,
    check_key,
    check_manifest,
)

__all__ = ["LocalStore"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- local store
class LocalStore:
    """Artifacts in a local directory (see the module docstring for the layout).

    Args:
        root: Cache directory; :func:`default_cache_root` when ``None``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()

    def entry_dir(self, key: str) -> Path:
        """Directory holding ``artifact.bin`` and ``manifest.json`` for ``key``."""
        return self.root / check_key(key)[:2] / key

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the key's file lock (waits ``timeout`` seconds, forever when ``None``).

        Raises:
            StoreError: The lock was not acquired in time.
        """
        import filelock

        path = self.root / "locks" / f"{check_key(key)}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(path))
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except filelock.Timeout as err:
            raise StoreError(
                f"lock {path}: expected to acquire it within {timeout} s; another builder of "
                f"key {key} still holds it"
            ) from err
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh directory on the store's filesystem, removed with everything in it on exit."""
        parent = self.root / "tmp"
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{check_key(key)}-", dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def sweep(self, key: str) -> None:
        """Remove temporary files and staging directories of ``key`` left by dead writers.

        Call it only while holding :meth:`lock`: then no live writer owns them.
        """
        for stale in (self.root / "tmp").glob(f"{check_key(key)}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if self.entry_dir(key).is_dir():
            sweep_partials(self.entry_dir(key))

    def quarantine(self, key: str, reason: str) -> Path:
        """Move the entry of ``key`` to ``quarantine/<key>-<timestamp>/`` and log a warning."""
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        dest = self.root / "quarantine" / f"{key}-{stamp}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.entry_dir(key), dest)
        except OSError:
            shutil.rmtree(self.entry_dir(key), ignore_errors=True)
            dest = self.entry_dir(key)
        logger.warning("local artifact %s failed verification (%s); moved to %s", key, reason, dest)
        return dest

    def get(self, key: str, *, warnings: list[str] | None = None) -> Artifact | None:
        """Return the verified artifact of ``key``, or ``None`` when absent or corrupt.

        A corrupt entry (unreadable manifest, wrong size or sha256) is quarantined and a warning
        appended to ``warnings``.
        """
        entry = self.entry_dir(key)
        manifest_path, artifact_path = entry / MANIFEST_NAME, entry / ARTIFACT_NAME
        if not manifest_path.is_file():
            return None
        try:
            manifest = check_manifest(
                json.loads(manifest_path.read_text()), key, str(manifest_path)
            )
            sha256, size = file_digest(artifact_path)
            check_digest(str(artifact_path), manifest, (sha256, size))
        except (OSError, ValueError, EngineIntegrityError) as err:
            dest = self.quarantine(key, str(err))
            if warnings is not None:
                warnings.append(f"local artifact {key} was corrupt ({err}); quarantined at {dest}")
            return None
        return Artifact(key, artifact_path, sha256, size, "local", manifest)

    def put(
        self,
        key: str,
        artifact_path: str | os.PathLike[str],
        manifest: Mapping[str, Any],
        *,
        move: bool = False,
    ) -> Artifact:
        """Install a file as the artifact of ``key`` (copied, or renamed when ``move``).

        Call it while holding :meth:`lock`. The installed bytes are checked against
        ``manifest`` before the manifest is written.

        Raises:
            EngineIntegrityError: The file does not match the manifest's size and sha256.
        """
        manifest = check_manifest(dict(manifest), key, f"for {artifact_path}")
        entry = self.entry_dir(key)
        entry.mkdir(parents=True, exist_ok=True)
        (entry / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest: readers see a miss
        with atomic_path(entry / ARTIFACT_NAME) as tmp:
            if move:
                try:
                    os.replace(artifact_path, tmp)
                except OSError:
                    shutil.copyfile(artifact_path, tmp)
            else:
                shutil.copyfile(artifact_path, tmp)
            sha256, size = file_digest(tmp)
            check_digest(str(artifact_path), manifest, (sha256, size))
        write_bytes_atomic(entry / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
        return Artifact(key, entry / ARTIFACT_NAME, sha256, size, "local", manifest)
