"""Face crops under an S3 prefix, read a slice at a time, through the engine store's S3 settings.

``s3://BUCKET/PREFIX`` as a streaming input (:mod:`arcface_lab.runs.stream`): the image
objects under the prefix (``.jpg``, ``.png``, ... by key), in key order, each fetched
and decoded when its slice is read. The client is the engine store's
(:class:`~arcface_lab.store.s3.S3Store`): the same credentials chain, endpoint, path
addressing, timeouts and retries, so an S3 that works for engines works for faces.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from arcface_lab.data.images import IMAGE_SUFFIXES, decode_image
from arcface_lab.errors import DataError
from arcface_lab.store.keys import parse_store_url
from arcface_lab.store.s3 import S3Store

__all__ = ["S3Source"]


class S3Source:
    """The image objects under ``url`` (see the module docstring)."""

    def __init__(
        self,
        url: str,
        size: tuple[int, int] = (112, 112),
        endpoint_url: str | None = None,
        **store_kwargs: Any,
    ) -> None:
        bucket, prefix = parse_store_url(url)
        self.name, self.size = url, size
        self.store = S3Store(bucket, prefix, endpoint_url, **store_kwargs)
        listing = self._list()
        if not listing:
            raise DataError(
                f"{url}: no image objects ({', '.join(IMAGE_SUFFIXES)}) under this prefix"
            )
        self.keys = [key for key, _, _ in listing]
        digest = hashlib.sha256()
        for key, etag, length in listing:
            digest.update(f"{key}\0{etag}\0{length}\n".encode())
        self._listing_sha256 = digest.hexdigest()

    def _list(self) -> list[tuple[str, str, int]]:
        from botocore.exceptions import BotoCoreError, ClientError

        store = self.store
        prefix = f"{store.prefix}/" if store.prefix else ""
        found = []
        try:
            pages = store.client.get_paginator("list_objects_v2").paginate(
                Bucket=store.bucket, Prefix=prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.lower().endswith(IMAGE_SUFFIXES):
                        found.append((key, str(obj.get("ETag", "")), int(obj.get("Size", 0))))
        except (ClientError, BotoCoreError) as err:
            raise DataError(str(store._error("listing", prefix, err))) from None
        return sorted(found)

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start < stop <= len(self.keys):
            raise DataError(
                f"{self.name}: expected a slice within [0, {len(self.keys)}), got [{start}, {stop})"
            )
        crops = []
        for key in self.keys[start:stop]:
            where = f"s3://{self.store.bucket}/{key}"
            response = self.store._call("get_object", key)
            if response is None:
                raise DataError(f"{where}: gone since the prefix was listed")
            crops.append(decode_image(response["Body"].read(), where, self.size))
        return np.stack(crops)

    def fingerprint(self) -> dict[str, Any]:
        """The keys, ETags and sizes of the listing, hashed (the objects are not read)."""
        return {
            "kind": "s3",
            "url": self.name,
            "endpoint": self.store.endpoint_url,
            "count": len(self.keys),
            "listing_sha256": self._listing_sha256,
        }
