"""Artifact keys and manifests: what makes an artifact valid, and the check of one against it."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from arcface_lab.errors import EngineIntegrityError, InputError

__all__ = [
    "ARTIFACT_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "Artifact",
    "Origin",
    "artifact_key",
    "check_digest",
    "check_key",
    "check_manifest",
    "device_fingerprint",
    "make_manifest",
    "parse_store_url",
]

SCHEMA_VERSION = 1
ARTIFACT_NAME = "artifact.bin"
MANIFEST_NAME = "manifest.json"
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
Origin = Literal["built", "local", "remote"]


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


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InputError(f"artifact key {key!r}: expected 64 lowercase hex digits (a sha256)")
    return key


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


def check_manifest(manifest: Any, key: str, where: str) -> dict[str, Any]:
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


def check_digest(what: str, manifest: Mapping[str, Any], got: tuple[str, int] | None) -> None:
    """Raise EngineIntegrityError unless ``got`` (sha256, size) is what ``manifest`` records."""
    if got != (manifest["sha256"], manifest["size"]):
        found = "nothing" if got is None else f"{got[1]} bytes with sha256 {got[0]}"
        raise EngineIntegrityError(
            f"artifact {what}: expected {manifest['size']} bytes with sha256 "
            f"{manifest['sha256']}, got {found}"
        )
