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
- Local writes go through :func:`arcface_lab.core.files.atomic_path`: a hidden
  ``.<name>.<random>.partial`` in the destination folder, fsynced, then ``os.replace``-d into
  place (artifact first, manifest last); it is removed on failure and swept under the lock.
- Remote writes are create-only (``If-None-Match: *``); when a server does not implement
  conditional writes the store falls back to write-then-verify.
- :meth:`EngineStore.fetch_or_build` holds the key's file lock (``filelock``) while it looks up,
  builds and publishes, so concurrent builders of one key (threads or processes) build once.
  An unreachable or corrupt remote is a warning and a local build, unless ``strict=True``.

Written by hand because no maintained library does content-addressed engine caching with these
guarantees; ``filelock`` and ``boto3`` (imported lazily) do the locking and the S3 transport.

Modules: :mod:`~arcface_lab.store.keys` (keys, manifests, the device fingerprint),
:mod:`~arcface_lab.store.local`, :mod:`~arcface_lab.store.s3` and
:mod:`~arcface_lab.store.tiered` (``fetch_or_build``); their public names are re-exported here.
"""

from arcface_lab.core.files import default_cache_root as default_local_root
from arcface_lab.core.files import file_digest
from arcface_lab.store.keys import (
    ARTIFACT_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Artifact,
    artifact_key,
    device_fingerprint,
    make_manifest,
    parse_store_url,
)
from arcface_lab.store.local import LocalStore
from arcface_lab.store.s3 import S3Store
from arcface_lab.store.tiered import EngineStore, open_store

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
    "file_digest",
    "make_manifest",
    "open_store",
    "parse_store_url",
]
