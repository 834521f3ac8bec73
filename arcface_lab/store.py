"""Engine artifact store: built engines cached locally and in S3, content-addressed and checked.

An *artifact* is whatever a backend builds once and reuses (a TensorRT plan, an ORT-optimized
model, an OpenVINO blob). Its key is the sha256 of the canonical JSON of everything that makes it
valid (:func:`artifact_key`), and a JSON manifest beside it records those inputs together with
the artifact's sha256 and size.

Layout::

    local   <root>/<key[:2]>/<key>/artifact.bin       the artifact
            <root>/<key[:2]>/<key>/manifest.json      written last: a manifest means complete
            <root>/locks/<key>.lock                   one lock per key (never deleted)
            <root>/tmp/<key>-*/                       staging for builds and downloads
            <root>/quarantine/<key>-<timestamp>/      entries that failed verification
    S3      s3://<bucket>/<prefix>/<key>/artifact.bin  uploaded first
            s3://<bucket>/<prefix>/<key>/manifest.json uploaded last: a manifest means complete

Guarantees:

- Readers verify size and sha256 against the manifest before returning a path; a local entry
  that fails is moved to ``quarantine/`` (a logged warning), a remote one raises
  :class:`~arcface_lab.errors.EngineIntegrityError` and is never cached.
- Local writes go to a temporary name in the destination directory, are fsynced and then
  ``os.replace``-d into place (artifact first, manifest last); temporary names start with ``.``
  and end in ``.tmp`` and are removed on failure.
- Remote writes are create-only (``If-None-Match: *``); when a server does not implement
  conditional writes the store falls back to write-then-verify.
- :meth:`EngineStore.fetch_or_build` holds the key's file lock (``filelock``) while it looks up,
  builds and publishes, so concurrent builders of one key (threads or processes) build once.
  An unreachable or corrupt remote is a warning and a local build, unless ``strict=True``.

Written by hand because no maintained library does content-addressed engine caching with these
guarantees; ``filelock`` and ``boto3`` (imported lazily) do the locking and the S3 transport.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from .errors import EngineIntegrityError, InputError, StoreError

__all__ = [
    "ARTIFACT_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Artifact",
    "EngineStore",
    "LocalStore",
    "S3Store",
    "artifact_key",
    "default_local_root",
    "device_fingerprint",
    "file_sha256",
    "make_manifest",
    "open_store",
    "parse_store_url",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ARTIFACT_NAME = "artifact.bin"
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
Origin = Literal["built", "local", "remote"]


# ---------------------------------------------------------------------------- keys and helpers
def _check_json(value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"{where}: expected a finite number, got {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: expected string keys, got {k!r}")
            _check_json(item, f"{where}[{k!r}]")
        return
    raise InputError(
        f"{where}: expected a JSON value (None, bool, int, float, str, list, dict), "
        f"got {type(value).__name__}"
    )


def _canonical_json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def artifact_key(inputs: Mapping[str, Any]) -> str:
    """Return the artifact key: sha256 hex of the canonical JSON of ``inputs``.

    Args:
        inputs: Everything that makes an artifact valid (ONNX sha256, backend, precision recipe,
            profile, library version, :func:`device_fingerprint`, backend flags). Values must be
            JSON values; key order does not matter.

    Raises:
        InputError: ``inputs`` is not a mapping, or holds a value JSON cannot represent exactly.
    """
    if not isinstance(inputs, Mapping):
        raise InputError(f"key inputs: expected a mapping, got {type(inputs).__name__}")
    _check_json(inputs, "key inputs")
    return hashlib.sha256(_canonical_json(inputs).encode("ascii")).hexdigest()


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InputError(f"artifact key {key!r}: expected 64 lowercase hex digits (a sha256)")
    return key


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Return ``(sha256 hex, size in bytes)`` of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _gpu_fingerprint() -> dict[str, Any] | None:
    try:
        import torch
    except (ImportError, OSError):
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {
        "kind": "cuda",
        "name": torch.cuda.get_device_name(index),
        "compute_capability": f"{major}.{minor}",
    }


def device_fingerprint(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """Describe the device an artifact is built for.

    On a CUDA device (torch importable and ``torch.cuda.is_available()``): GPU name and compute
    capability. Otherwise the CPU model and the sorted ISA flags relevant to inference (AVX2,
    AVX-512, VNNI, BF16, AMX, ...) from ``cpuinfo``, or ``platform`` when that cannot be read.
    """
    gpu = _gpu_fingerprint()
    if gpu is not None:
        return gpu
    from arcface_lab.core.host import real_cpu

    cpu = real_cpu(cpuinfo)
    isa = sorted(cpu.flags)
    return {
        "kind": "cpu",
        "model": cpu.model,
        "machine": platform.machine(),
        "isa": isa,
    }


def default_local_root() -> Path:
    """``$XDG_CACHE_HOME/arcface_lab`` when that is set, else ``~/.cache/arcface_lab``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "arcface_lab"


def parse_store_url(url: str) -> tuple[str, str]:
    """Split ``s3://BUCKET/PREFIX`` into ``(bucket, prefix)``; the prefix may be empty.

    Raises:
        InputError: ``url`` is not of that form or the bucket name is not a valid S3 name.
    """
    expected = "expected s3://BUCKET or s3://BUCKET/PREFIX"
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InputError(f"store URL {url!r}: {expected}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise InputError(
            f"store URL {url!r}: bucket {bucket!r} is not a valid S3 bucket name "
            f"(3-63 lowercase letters, digits, '.', '-'); {expected}"
        )
    return bucket, prefix.strip("/")


@dataclasses.dataclass
class Artifact:
    """A verified artifact: ``path`` holds bytes whose sha256 and size match ``manifest``."""

    key: str
    path: Path
    sha256: str
    size: int
    origin: Origin
    manifest: dict[str, Any]
    warnings: list[str] = dataclasses.field(default_factory=list)


def make_manifest(
    key: str, inputs: Mapping[str, Any], sha256: str, size: int, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Build the manifest for an artifact; ``extra`` holds what the builder returned."""
    _check_json(extra, "build result")
    return {
        "schema": SCHEMA_VERSION,
        "key": key,
        "inputs": dict(inputs),
        "sha256": sha256,
        "size": size,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "built_on": {"hostname": socket.gethostname(), "platform": platform.platform()},
        "extra": dict(extra),
    }


def _check_manifest(manifest: Any, key: str, where: str) -> dict[str, Any]:
    """Return ``manifest`` if it is a manifest of this schema for ``key``, else raise."""
    problem = ""
    if not isinstance(manifest, dict):
        problem = f"expected a JSON object, got {type(manifest).__name__}"
    elif manifest.get("schema") != SCHEMA_VERSION:
        problem = f"expected schema {SCHEMA_VERSION}, got {manifest.get('schema')!r}"
    elif manifest.get("key") != key:
        problem = f"expected key {key}, got {manifest.get('key')!r}"
    elif not isinstance(manifest.get("sha256"), str) or not _KEY_RE.match(manifest["sha256"]):
        problem = f"expected a sha256 hex digest, got {manifest.get('sha256')!r}"
    elif not isinstance(manifest.get("size"), int) or manifest["size"] < 0:
        problem = f"expected a size in bytes, got {manifest.get('size')!r}"
    else:
        try:
            derived = artifact_key(manifest.get("inputs", {}))
        except InputError as err:
            derived = str(err)
        if derived != key:
            problem = f"its inputs hash to {derived}, expected {key}"
    if problem:
        raise EngineIntegrityError(f"manifest {where}: {problem}")
    return manifest


def _check_digest(what: str, manifest: Mapping[str, Any], got: tuple[str, int] | None) -> None:
    """Raise EngineIntegrityError unless ``got`` (sha256, size) is what ``manifest`` records."""
    if got != (manifest["sha256"], manifest["size"]):
        found = "nothing" if got is None else f"{got[1]} bytes with sha256 {got[0]}"
        raise EngineIntegrityError(
            f"artifact {what}: expected {manifest['size']} bytes with sha256 "
            f"{manifest['sha256']}, got {found}"
        )


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(directory: Path, name: str) -> Path:
    return directory / f".{name}.{uuid.uuid4().hex}.tmp"


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp_name(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- local store
class LocalStore:
    """Artifacts in a local directory (see the module docstring for the layout).

    Args:
        root: Cache directory; :func:`default_local_root` when ``None``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_local_root()

    def entry_dir(self, key: str) -> Path:
        """Directory holding ``artifact.bin`` and ``manifest.json`` for ``key``."""
        return self.root / _check_key(key)[:2] / key

    @contextlib.contextmanager
    def lock(self, key: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the key's file lock (waits ``timeout`` seconds, forever when ``None``).

        Raises:
            StoreError: The lock was not acquired in time.
        """
        import filelock

        path = self.root / "locks" / f"{_check_key(key)}.lock"
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
        path = Path(tempfile.mkdtemp(prefix=f"{_check_key(key)}-", dir=parent))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def sweep(self, key: str) -> None:
        """Remove temporary files and staging directories of ``key`` left by dead writers.

        Call it only while holding :meth:`lock`: then no live writer owns them.
        """
        for stale in (self.root / "tmp").glob(f"{_check_key(key)}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.entry_dir(key).glob(".*.tmp"):
            stale.unlink(missing_ok=True)

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
            manifest = _check_manifest(
                json.loads(manifest_path.read_text()), key, str(manifest_path)
            )
            sha256, size = file_sha256(artifact_path)
            _check_digest(str(artifact_path), manifest, (sha256, size))
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
        manifest = _check_manifest(dict(manifest), key, f"for {artifact_path}")
        entry = self.entry_dir(key)
        entry.mkdir(parents=True, exist_ok=True)
        (entry / MANIFEST_NAME).unlink(missing_ok=True)  # no manifest: readers see a miss
        tmp = _tmp_name(entry, ARTIFACT_NAME)
        try:
            if move:
                try:
                    os.replace(artifact_path, tmp)
                except OSError:
                    shutil.copyfile(artifact_path, tmp)
            else:
                shutil.copyfile(artifact_path, tmp)
            sha256, size = file_sha256(tmp)
            _check_digest(str(artifact_path), manifest, (sha256, size))
            _fsync_file(tmp)
            os.replace(tmp, entry / ARTIFACT_NAME)
            _write_bytes_atomic(entry / MANIFEST_NAME, json.dumps(manifest, indent=2).encode())
            _fsync_dir(entry)
        finally:
            tmp.unlink(missing_ok=True)
        return Artifact(key, entry / ARTIFACT_NAME, sha256, size, "local", manifest)


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
        max_attempts: Attempts per request, retries included.

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
        connect_timeout: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.bucket, self.prefix, self.endpoint_url = bucket, prefix.strip("/"), endpoint_url
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
                read_timeout=60,
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
        return "/".join(p for p in (self.prefix, _check_key(key), name) if p)

    def url(self, key: str, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.object_key(key, name)}"

    def _error(self, op: str, obj: str, err: Exception) -> StoreError:
        where = f"s3://{self.bucket}/{obj} at {self.endpoint_url or 'AWS'}"
        code = _client_error_code(err)
        return StoreError(f"S3 {op} of {where} failed: {f'{code}: ' if code else ''}{err}")

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
        return _check_manifest(manifest, key, where)

    def _check_artifact(self, key: str, manifest: Mapping[str, Any], dest: Path | None) -> None:
        got = self._download(self.object_key(key, ARTIFACT_NAME), dest)
        _check_digest(self.url(key, ARTIFACT_NAME), manifest, got)

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
        tmp = _tmp_name(dest.parent, ARTIFACT_NAME)
        try:
            self._check_artifact(key, manifest, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
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

        Returns:
            True when this call published it, False when a valid entry was already there.

        Raises:
            StoreError: The server cannot be reached or refuses the request, or an artifact is
                there without a manifest (a writer in progress or one that died mid-way).
            EngineIntegrityError: The local file does not match ``manifest``, or the entry
                already published under ``key`` is corrupt.
        """
        manifest = _check_manifest(dict(manifest), key, f"for {artifact_path}")
        _check_digest(str(artifact_path), manifest, file_sha256(artifact_path))
        body = json.dumps(manifest, indent=2).encode()
        steps = (
            (ARTIFACT_NAME, Path(artifact_path), manifest["sha256"]),
            (MANIFEST_NAME, body, hashlib.sha256(body).hexdigest()),
        )
        for name, data, sha256 in steps:
            if not self._put_create_only(self.object_key(key, name), data, sha256):
                self.verify(key)
                return False
        return True


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
            with self.local.staging(key) as stage:
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
        sha256, size = file_sha256(target)
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
) -> EngineStore:
    """The engine store of a params ``store`` section or the CLI's store flags.

    ``local`` defaults to ``default_local_root() / "engines"``; ``s3`` is an
    ``s3://BUCKET/PREFIX`` URL (optional), ``s3_endpoint`` its endpoint URL.
    """
    if s3_endpoint and not s3:
        raise InputError(f"s3 endpoint {s3_endpoint!r} given without an s3://BUCKET/PREFIX store")
    root = Path(local) if local else default_local_root() / "engines"
    remote = S3Store.from_url(s3, endpoint_url=s3_endpoint) if s3 else None
    return EngineStore(LocalStore(root), remote, strict=strict)
