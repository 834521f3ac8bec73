"""Faces found and aligned in a photo, kept on disk so that no photo is aligned twice.

Aligning a photo takes seconds (MTCNN over its pyramid, ten O-Net views of each face,
refinement steps on each face's own crop), and a run's photos are the same from one run,
test or notebook to the next. :class:`AlignedStore` keeps one entry a photo under
``<cache>/aligned/<key>.npz``: the crops (``uint8 (N, 112, 112, 3)``) and the photo's
record as JSON bytes, no pickles. The key is the sha256 of the photo's bytes and of
everything else the result depends on (the ``setup``: the detector, its settings and its
weights' sha256, the alignment settings, the source of the code that computes it, the
library versions and the hardware class, since the detector's float32 rounding depends
on the kernels). An entry is written under a temporary name and renamed into place, its
sha256 recorded beside it and checked before each read
(:func:`arcface_lab.core.files.cached`): one that does not match is quarantined, logged
and made again, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.files import cached, file_sha256

__all__ = ["FORMAT", "AlignedStore", "NotStored", "source_sha256"]

log = logging.getLogger(__name__)

#: The entry's layout; part of every key, so a change of layout never reads an old entry.
FORMAT = 1


class NotStored(Exception):
    """Raised by a ``make`` whose result must not be kept (a photo that could not be read:
    its record names the path it was read at); the result travels with it."""

    def __init__(self, crops: np.ndarray, record: Mapping[str, Any]) -> None:
        super().__init__("not stored")
        self.crops, self.record = crops, dict(record)


def source_sha256(paths: Iterable[str | Path]) -> str:
    """The sha256 of source files' bytes, in the order given (their names left out)."""
    digest = hashlib.sha256()
    for p in paths:
        digest.update(Path(p).read_bytes())
    return digest.hexdigest()


class AlignedStore:
    """Aligned photos under ``root`` (``<cache>/aligned``), keyed by photo and ``setup``.

    Args:
        root: the folder of entries; made on the first write.
        setup: everything but the photo the result depends on (JSON-serializable).
    """

    def __init__(self, root: str | Path, setup: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self._setup = json.dumps({"format": FORMAT, **setup}, sort_keys=True)
        #: Photos served from the store and photos aligned (and stored) here, for the record.
        self.hits, self.made = 0, 0

    def key(self, photo: str | Path) -> str:
        """The entry name of ``photo`` (its bytes' sha256 joined with the setup).

        Raises:
            OSError: the photo cannot be read.
        """
        text = json.dumps({"photo": file_sha256(photo), "setup": self._setup})
        return hashlib.sha256(text.encode()).hexdigest()

    def get(
        self,
        photo: str | Path,
        make: Callable[[], tuple[np.ndarray, Mapping[str, Any]]],
    ) -> tuple[np.ndarray, dict[str, Any], bool]:
        """``photo``'s crops and record: the stored ones, else ``make()``'s, stored.

        Returns ``(crops, record, stored)``, ``stored`` True when read from the store.
        A photo whose bytes cannot be read, or a ``make`` that raises :class:`NotStored`,
        gives ``make``'s result and stores nothing.
        """
        try:
            entry = self.root / f"{self.key(photo)}.npz"
        except OSError:
            crops, record = make()
            return crops, dict(record), False
        fresh: list[tuple[np.ndarray, dict[str, Any]]] = []

        def write(tmp: Path) -> None:
            crops, record = make()
            fresh.append((crops, dict(record)))
            buffer = io.BytesIO()
            np.savez(
                buffer,
                crops=np.ascontiguousarray(crops, dtype=np.uint8),
                record=np.frombuffer(json.dumps(record).encode(), dtype=np.uint8),
            )
            tmp.write_bytes(buffer.getvalue())

        try:
            cached(entry, write, suffix=".npz")
        except NotStored as kept:
            return kept.crops, kept.record, False
        if fresh:
            self.made += 1
            return fresh[0][0], fresh[0][1], False
        with np.load(entry, allow_pickle=False) as data:
            crops = np.asarray(data["crops"])
            record = json.loads(data["record"].tobytes().decode())
        self.hits += 1
        log.debug("%s: aligned faces from %s", photo, entry)
        return crops, record, True
