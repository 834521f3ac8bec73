"""The S3 store (AWS, MinIO, SeaweedFS): create-only uploads, verified downloads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arcface_lab.core.files import atomic_path, file_digest
from arcface_lab.errors import EngineIntegrityError, StoreError
from arcface_lab.store.keys import (
    ARTIFACT_NAME,
    MANIFEST_NAME,
    Artifact,
    check_digest,
    check_key,
    check_manifest,
    parse_store_url,
)

__all__ = ["S3Store"]

_CHUNK = 1 << 20
#: Short by default: a shared cache that does not answer must cost seconds, not minutes,
#: before the local build (``store`` in params sets them).
DEFAULT_CONNECT_TIMEOUT_S = 3.0
DEFAULT_READ_TIMEOUT_S = 10.0
DEFAULT_MAX_ATTEMPTS = 2

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------- S3 store
def _client_error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class S3Store:
    """Artifacts in an S3 bucket (AWS, MinIO, SeaweedFS) under ``<prefix>/<key>/``.

    Credentials come from the standard AWS chain (environment, config files, instance roles);
    they are never parameters and never logged. Uploads are single PUTs (up to 5 GB), sent with
    ``If-None-Match: *`` and a SHA-256 checksum the server verifies.

    Args:
        bucket: Bucket name.
        prefix: Key prefix inside the bucket ('' for the bucket root).
        endpoint_url: S3 endpoint (``http://127.0.0.1:8333`` for a local server); AWS when None.
        region: Region name; boto3's default when None.
        client: A ready boto3 S3 client (the other connection arguments are then unused).
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for the server to answer (a hung endpoint).
        max_attempts: Attempts per request, retries included; a request gives up after
            about ``max_attempts * (connect_timeout + read_timeout)`` seconds.

    Raises:
        StoreError: boto3 is not installed.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url
        self.bound = (
            f"{max_attempts} attempt(s) of {connect_timeout:g} s to connect and "
            f"{read_timeout:g} s to answer"
        )
        self._conditional_writes = True
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as err:
                raise StoreError(
                    f"S3 store s3://{bucket}/{self.prefix}: boto3 is not installed; "
                    "pip install boto3 (or arcface_lab[s3])"
                ) from err
            config = Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "total_max_attempts": max_attempts},
            )
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        self.client = client

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> S3Store:
        """Create a store from ``s3://BUCKET/PREFIX`` (see :func:`parse_store_url`)."""
        bucket, prefix = parse_store_url(url)
        return cls(bucket, prefix, **kwargs)

    def object_key(self, key: str, name: str) -> str:
        """S3 object key of ``name`` (``artifact.bin`` or ``manifest.json``) for ``key``."""
        return "/".join(p for p in (self.prefix, check_key(key), name) if p)

    def url(self, key: str, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.object_key(key, name)}"

    def _error(self, op: str, obj: str, err: Exception) -> StoreError:
        where = f"s3://{self.bucket}/{obj} at {self.endpoint_url or 'AWS'}"
        code = _client_error_code(err)
        return StoreError(
            f"S3 {op} of {where} failed: {f'{code}: ' if code else ''}{err} (gave up after "
            f"{self.bound})"
        )

    def _call(self, op: str, obj: str, **kwargs: Any) -> Any:
        """Run one client call; a missing object gives None, any other failure a StoreError."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, op)(Bucket=self.bucket, Key=obj, **kwargs)
        except ClientError as err:
            if _client_error_code(err) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error(op, obj, err) from err
        except BotoCoreError as err:
            raise self._error(op, obj, err) from err

    def _download(self, obj: str, dest: Path | None) -> tuple[str, int] | None:
        """Stream an object (to ``dest`` if given); its (sha256, size), or None when absent."""
        from botocore.exceptions import BotoCoreError

        response = self._call("get_object", obj)
        if response is None:
            return None
        digest, size = hashlib.sha256(), 0
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open(dest, "wb")) if dest is not None else None
            try:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if f is not None:
                        f.write(chunk)
            except BotoCoreError as err:
                raise self._error("get_object", obj, err) from err
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
        return digest.hexdigest(), size

    def get_manifest(self, key: str) -> dict[str, Any] | None:
        """The published manifest of ``key``, or None when there is none.

        Raises:
            StoreError: The server cannot be reached or refuses the request.
            EngineIntegrityError: The manifest is not a valid manifest for ``key``.
        """
        response = self._call("get_object", self.object_key(key, MANIFEST_NAME))
        if response is None:
            return None
        from botocore.exceptions import BotoCoreError

        where = self.url(key, MANIFEST_NAME)
        try:
            manifest = json.loads(response["Body"].read())
        except BotoCoreError as err:
            raise self._error("get_object", self.object_key(key, MANIFEST_NAME), err) from err
        except ValueError as err:
            raise EngineIntegrityError(f"manifest {where}: expected JSON ({err})") from err
        return check_manifest(manifest, key, where)

    def _check_artifact(self, key: str, manifest: Mapping[str, Any], dest: Path | None) -> None:
        got = self._download(self.object_key(key, ARTIFACT_NAME), dest)
        check_digest(self.url(key, ARTIFACT_NAME), manifest, got)

    def get(self, key: str, dest_dir: str | os.PathLike[str]) -> Artifact | None:
        """Download and verify the artifact of ``key`` to ``dest_dir/artifact.bin``.

        Returns None when no manifest is published. The bytes are checked against the manifest
        in a temporary file before they are moved into place.

        Raises:
            StoreError: The server cannot be reached or refuses the request.
            EngineIntegrityError: The manifest is invalid, or the artifact is missing or does
                not match the manifest's size and sha256.
        """
        manifest = self.get_manifest(key)
        if manifest is None:
            return None
        dest = Path(dest_dir) / ARTIFACT_NAME
        with atomic_path(dest) as tmp:
            self._check_artifact(key, manifest, tmp)
        return Artifact(key, dest, manifest["sha256"], manifest["size"], "remote", manifest)

    def verify(self, key: str) -> None:
        """Check the published entry of ``key`` by streaming it through sha256 (nothing saved).

        Raises:
            StoreError: There is no manifest (another writer is publishing, or died mid-way),
                or the server cannot be reached.
            EngineIntegrityError: The published entry is corrupt.
        """
        manifest = self.get_manifest(key)
        if manifest is None:
            raise StoreError(
                f"{self.url(key)}: expected a manifest beside the artifact, found none "
                "(another writer is publishing it, or died mid-way); not overwritten"
            )
        self._check_artifact(key, manifest, None)

    def _put_object(self, obj: str, body: bytes | Path, sha256: str, conditional: bool) -> None:
        extra: dict[str, str] = {}
        if conditional:  # a server without conditional writes gets neither header
            checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
            extra = {"IfNoneMatch": "*", "ChecksumAlgorithm": "SHA256", "ChecksumSHA256": checksum}
        with contextlib.ExitStack() as stack:
            data = stack.enter_context(open(body, "rb")) if isinstance(body, Path) else body
            self.client.put_object(Bucket=self.bucket, Key=obj, Body=data, **extra)

    def _put_create_only(self, obj: str, body: bytes | Path, sha256: str) -> bool:
        """Upload ``body`` unless ``obj`` exists; True when this call wrote it."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._conditional_writes:
            try:
                self._put_object(obj, body, sha256, conditional=True)
                return True
            except ClientError as err:
                code = _client_error_code(err)
                if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    return False
                if code not in ("NotImplemented", "501"):
                    raise self._error("put_object", obj, err) from err
                logger.info(
                    "S3 at %s lacks conditional writes: write, then verify", self.endpoint_url
                )
                self._conditional_writes = False
            except BotoCoreError as err:
                raise self._error("put_object", obj, err) from err
        # Write-then-verify: a racing writer may overwrite ours; the read-back catches it.
        if self._call("head_object", obj) is not None:
            return False
        try:
            self._put_object(obj, body, sha256, conditional=False)
        except (ClientError, BotoCoreError) as err:
            raise self._error("put_object", obj, err) from err
        got = self._download(obj, None)
        if got is None or got[0] != sha256:
            raise EngineIntegrityError(
                f"object s3://{self.bucket}/{obj}: expected sha256 {sha256} after upload, got "
                f"{'no object' if got is None else got[0]} (another writer raced this one)"
            )
        return True

    def put(
        self, key: str, artifact_path: str | os.PathLike[str], manifest: Mapping[str, Any]
    ) -> bool:
        """Publish an artifact create-only: artifact first, manifest last.

        An artifact already there without a manifest (a writer that died between the two
        uploads) is no entry: nobody reads it. It is kept when its bytes are ours, else
        replaced; then the manifest is published create-only, so of two writers racing
        here only one manifest wins and the entry is verified against it.

        Returns:
            True when this call published it, False when a valid entry was already there.

        Raises:
            StoreError: The server cannot be reached or refuses the request.
            EngineIntegrityError: The local file does not match ``manifest``, or the entry
                already published under ``key`` is corrupt.
        """
        manifest = check_manifest(dict(manifest), key, f"for {artifact_path}")
        check_digest(str(artifact_path), manifest, file_digest(artifact_path))
        body = json.dumps(manifest, indent=2).encode()
        artifact = self.object_key(key, ARTIFACT_NAME)
        if not self._put_create_only(artifact, Path(artifact_path), manifest["sha256"]):
            if self.get_manifest(key) is not None:
                self.verify(key)
                return False
            self._adopt_orphan(key, Path(artifact_path), manifest["sha256"])
        manifest_obj = self.object_key(key, MANIFEST_NAME)
        if not self._put_create_only(manifest_obj, body, hashlib.sha256(body).hexdigest()):
            self.verify(key)
            return False
        return True

    def _adopt_orphan(self, key: str, artifact_path: Path, sha256: str) -> None:
        """An artifact without a manifest: kept when its bytes are ours, else replaced."""
        from botocore.exceptions import BotoCoreError, ClientError

        obj = self.object_key(key, ARTIFACT_NAME)
        got = self._download(obj, None)
        if got is not None and got[0] == sha256:
            logger.warning("%s: artifact without a manifest, same bytes: publishing", self.url(key))
            return
        logger.warning(
            "%s: artifact without a manifest (a writer died mid-way), sha256 %s: replaced",
            self.url(key),
            "none" if got is None else got[0][:16],
        )
        try:
            self._put_object(obj, artifact_path, sha256, conditional=False)
        except (ClientError, BotoCoreError) as err:
            raise self._error("put_object", obj, err) from err
