"""The tiered fetch-or-build: local, then remote, then a build published to both."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.files import default_cache_root, file_digest, naming_a_full_disk
from arcface_lab.errors import EngineIntegrityError, InputError, StoreError
from arcface_lab.store.keys import ARTIFACT_NAME, Artifact, Origin, artifact_key, make_manifest
from arcface_lab.store.local import LocalStore
from arcface_lab.store.s3 import S3Store

__all__ = ["EngineStore", "open_store"]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- tiered lookup
class EngineStore:
    """Tiered artifact lookup: local -> remote -> build -> publish to both.

    Args:
        local: The local cache.
        remote: An optional shared S3 store.
        strict: Raise on every remote problem (unreachable, refused, corrupt) instead of
            recording a warning and building locally.
        lock_timeout: Seconds to wait for another builder of the same key (None: forever).
    """

    def __init__(
        self,
        local: LocalStore,
        remote: S3Store | None = None,
        *,
        strict: bool = False,
        lock_timeout: float | None = None,
    ) -> None:
        self.local = local
        self.remote = remote
        self.strict = strict
        self.lock_timeout = lock_timeout

    def _remote_failed(self, err: Exception, message: str, warnings: list[str]) -> None:
        if self.strict:
            raise err
        logger.warning("%s", message)
        warnings.append(message)

    def fetch_or_build(
        self, inputs: Mapping[str, Any], build: Callable[[Path], Mapping[str, Any] | None]
    ) -> Artifact:
        """Return the artifact for ``inputs``, building and publishing it on a miss.

        Args:
            inputs: Key inputs (see :func:`artifact_key`).
            build: Called as ``build(tmp_path)`` on a miss; writes the artifact file at
                ``tmp_path`` and may return extra JSON fields for the manifest. If it raises,
                the exception propagates and neither store is changed.

        Raises:
            StoreError: ``build`` wrote no artifact or returned something other than a mapping;
                or, with ``strict``, the remote store failed.
            EngineIntegrityError: With ``strict``, the remote copy is corrupt.
        """
        key = artifact_key(inputs)
        warnings: list[str] = []
        with self.local.lock(key, self.lock_timeout):
            found = self.local.get(key, warnings=warnings)
            if found is not None:
                found.warnings.extend(warnings)
                return found
            self.local.sweep(key)
            what = f"the {inputs.get('artifact', 'engine')} artifact {key[:16]}"
            hint = "free some space, or point --local-store at a disk with room"
            full = functools.partial(naming_a_full_disk, self.local.root, what, hint)
            # inside the stage as well: judged before the stage's partial files are removed
            with full(), self.local.staging(key) as stage, full():
                remote_state, fetched = "absent", None
                if self.remote is not None:
                    remote_state, fetched = self._fetch(key, stage, warnings)
                if fetched is not None:
                    art = self.local.put(key, fetched.path, fetched.manifest, move=True)
                    origin: Origin = "remote"
                else:
                    art = self._build(key, inputs, build, stage)
                    origin = "built"
                    if self.remote is not None:
                        self._publish(key, art, remote_state, warnings)
        return dataclasses.replace(art, origin=origin, warnings=warnings)

    def _fetch(self, key: str, stage: Path, warnings: list[str]) -> tuple[str, Artifact | None]:
        assert self.remote is not None
        try:
            fetched = self.remote.get(key, stage)
        except EngineIntegrityError as err:
            self._remote_failed(err, f"remote copy is corrupt, rebuilding locally: {err}", warnings)
            return "corrupt", None
        except StoreError as err:
            self._remote_failed(err, f"remote store unavailable, building locally: {err}", warnings)
            return "unreachable", None
        return ("absent" if fetched is None else "present"), fetched

    def _build(
        self,
        key: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        stage: Path,
    ) -> Artifact:
        target = stage / ARTIFACT_NAME
        extra = build(target)
        if extra is None:
            extra = {}
        if not isinstance(extra, Mapping):
            raise StoreError(
                f"build for key {key}: expected None or a mapping of manifest fields, "
                f"got {type(extra).__name__}"
            )
        if not target.is_file() or target.stat().st_size == 0:
            raise StoreError(f"build for key {key}: expected a non-empty artifact at {target}")
        sha256, size = file_digest(target)
        try:
            manifest = make_manifest(key, inputs, sha256, size, extra)
        except InputError as err:
            raise StoreError(f"build for key {key}: {err}") from err
        return self.local.put(key, target, manifest, move=True)

    def _publish(self, key: str, art: Artifact, remote_state: str, warnings: list[str]) -> None:
        assert self.remote is not None
        if remote_state == "unreachable":
            return
        if remote_state == "corrupt":
            message = (
                f"remote copy at {self.remote.url(key)} is corrupt and was not replaced "
                "(publishing is create-only); delete it so the next build can publish"
            )
            logger.warning("%s", message)
            warnings.append(message)
            return
        try:
            if not self.remote.put(key, art.path, art.manifest):
                logger.info("%s was published by another builder first", self.remote.url(key))
        except EngineIntegrityError as err:
            self._remote_failed(
                err, f"remote copy is corrupt and was not replaced: {err}", warnings
            )
        except StoreError as err:
            self._remote_failed(err, f"publishing to the remote store failed: {err}", warnings)


def open_store(
    local: str | os.PathLike[str] | None = None,
    s3: str | None = None,
    s3_endpoint: str | None = None,
    strict: bool = False,
    connect_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> EngineStore:
    """The engine store of a params ``store`` section or the CLI's store flags.

    ``local`` defaults to ``default_cache_root() / "engines"``; ``s3`` is an
    ``s3://BUCKET/PREFIX`` URL (optional), ``s3_endpoint`` its endpoint URL.
    """
    if s3_endpoint and not s3:
        raise InputError(f"s3 endpoint {s3_endpoint!r} given without an s3://BUCKET/PREFIX store")
    root = Path(local) if local else default_cache_root() / "engines"
    limits = {
        k: v
        for k, v in (
            ("connect_timeout", connect_timeout_s),
            ("read_timeout", read_timeout_s),
            ("max_attempts", max_attempts),
        )
        if v is not None
    }
    remote = S3Store.from_url(s3, endpoint_url=s3_endpoint, **limits) if s3 else None
    return EngineStore(LocalStore(root), remote, strict=strict)
