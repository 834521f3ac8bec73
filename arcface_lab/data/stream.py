"""Face crops read a slice at a time, from inputs of any size.

:func:`load_images` holds a whole input in memory; an evaluation set of a million
faces (38 GB of ``uint8`` crops) does not fit. An :class:`ImageSource` knows how many
faces an input has and reads any ``[start, stop)`` slice of them on demand, so a
streaming job (:mod:`arcface_lab.runs.stream`) holds one slice at a time:

* ``synthetic:N``: deterministic synthetic faces, any slice made on its own and equal
  to the same rows of ``synthetic_faces(N)`` (:func:`synthetic_faces` ``start``);
* ``faces.npy``: a ``uint8 (N, 112, 112, 3)`` array, each slice read at its offset;
* a folder of image files (sorted by name, as :func:`load_images` reads it);
* a list file (``.txt``, ``.lst``, ``.list``): one image path per line, relative to the
  list's folder, blank lines and ``#`` comments skipped.

Each source has a :meth:`~ImageSource.fingerprint`, what a resumed job compares to
know that it is reading the same input it started on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from arcface_lab.core.preprocess import check_images
from arcface_lab.data.images import (
    IMAGE_SUFFIXES,
    RUN_IMAGE_SEED,
    SYNTHETIC_IMAGES,
    parse_synthetic,
    read_image_file,
    synthetic_faces,
)
from arcface_lab.errors import DataError

__all__ = ["LIST_SUFFIXES", "ImageSource", "open_source"]

#: Suffixes of list files: one image path per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")


class ImageSource(Protocol):
    """Face crops, any slice of which can be read on its own."""

    #: What the user named (a path or ``synthetic:N``), for messages.
    name: str
    #: Crop size ``(height, width)``.
    size: tuple[int, int]

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Faces ``start`` to ``stop - 1`` as ``uint8 (stop - start, H, W, 3)`` RGB."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this input: equal fingerprints, equal faces."""
        ...


def _check_slice(source: ImageSource, start: int, stop: int) -> None:
    if not 0 <= start < stop <= len(source):
        raise DataError(
            f"{source.name}: expected a slice within [0, {len(source)}), got [{start}, {stop})"
        )


class SyntheticSource:
    """``synthetic:N``: face ``i`` is row ``i`` of ``synthetic_faces(N, seed)``.

    With ``faces_per_identity = k``, face ``i`` shows identity ``i // k`` (a labelled
    set for the all-pairs and 1:N protocols); 1 makes every face its own identity.
    """

    def __init__(
        self,
        n: int,
        seed: int = RUN_IMAGE_SEED,
        size: tuple[int, int] = (112, 112),
        faces_per_identity: int = 1,
    ) -> None:
        if faces_per_identity < 1:
            raise DataError(f"faces_per_identity: expected >= 1, got {faces_per_identity}")
        self.name = f"synthetic:{n}"
        self.n, self.seed, self.size, self.per = n, seed, size, faces_per_identity

    def __len__(self) -> int:
        return self.n

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_slice(self, start, stop)
        ids = None if self.per == 1 else [i // self.per for i in range(start, stop)]
        return synthetic_faces(
            stop - start, seed=self.seed, size=self.size, start=start, identities=ids
        )

    def fingerprint(self) -> dict[str, Any]:
        return {
            "kind": "synthetic",
            "count": self.n,
            "seed": self.seed,
            "size": list(self.size),
            "faces_per_identity": self.per,
        }


class NpySource:
    """A ``uint8 (N, H, W, 3)`` ``.npy`` file, each slice read at its offset.

    Not memory-mapped: pages of a mapping that were read stay in the process's resident
    set until the kernel needs them, so a mapped 40 GB input would look like a 40 GB
    process. A read here holds only the slice it returns.
    """

    def __init__(self, path: Path, size: tuple[int, int] = (112, 112)) -> None:
        self.name, self.path, self.size = str(path), path, size
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                self.offset = f.tell()
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc or 'empty file'})") from None
        if fortran:
            raise DataError(f"{path}: expected a C-ordered array, got a Fortran-ordered one")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        # the header is checked through a view of its shape and dtype that holds no memory
        check_images(np.broadcast_to(np.zeros((), self.dtype), self.shape), size, str(path))
        self.row_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        if path.stat().st_size < expected:
            raise DataError(
                f"{path}: truncated ({path.stat().st_size} bytes, the header says {expected})"
            )

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_slice(self, start, stop)
        data = bytearray((stop - start) * self.row_bytes)
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            got = f.readinto(data)
        if got != len(data):
            raise DataError(f"{self.path}: truncated at face {start} (the file changed?)")
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, *self.shape[1:])

    def fingerprint(self) -> dict[str, Any]:
        st = self.path.stat()
        return {
            "kind": "npy",
            "path": str(self.path.resolve()),
            "shape": list(self.shape),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
        }


class FilesSource:
    """Image files, decoded a slice at a time (a folder in name order, or a list file)."""

    def __init__(self, name: str, files: Sequence[Path], size: tuple[int, int] = (112, 112)):
        if not files:
            raise DataError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.name, self.files, self.size = name, list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def read(self, start: int, stop: int) -> np.ndarray:
        _check_slice(self, start, stop)
        return np.stack([read_image_file(p, self.size) for p in self.files[start:stop]])

    def fingerprint(self) -> dict[str, Any]:
        """The files' names, sizes and modification times, hashed (the bytes are not read)."""
        digest = hashlib.sha256()
        for p in self.files:
            try:
                st = p.stat()
            except OSError as exc:
                raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
            digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {
            "kind": "files",
            "name": self.name,
            "count": len(self.files),
            "listing_sha256": digest.hexdigest(),
        }


def _list_file(path: Path) -> list[Path]:
    """The image paths of a list file; each one checked, the first missing one named."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the list file ({exc})") from None
    files = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        file = Path(entry) if os.path.isabs(entry) else path.parent / entry
        if not file.is_file():
            raise DataError(f"{path}, line {number}: {entry}: no such image file")
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"{path}, line {number}: {entry}: expected an image file "
                f"({', '.join(IMAGE_SUFFIXES)})"
            )
        files.append(file)
    if not files:
        raise DataError(f"{path}: the list file names no image")
    return files


def open_source(
    spec: str | os.PathLike[str], size: tuple[int, int] = (112, 112), seed: int = RUN_IMAGE_SEED
) -> ImageSource:
    """The :class:`ImageSource` ``spec`` names (see the module docstring).

    Raises:
        DataError: no such input, an unreadable one, or one that holds no face crops.
    """
    n = parse_synthetic(str(spec), "images", SYNTHETIC_IMAGES)
    if n is not None:
        return SyntheticSource(n, seed, size)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return FilesSource(str(path), files, size)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpySource(path, size)
    if suffix in LIST_SUFFIXES:
        return FilesSource(str(path), _list_file(path), size)
    if suffix in IMAGE_SUFFIXES:
        return FilesSource(str(path), [path], size)
    raise DataError(
        f"{path}: expected synthetic:N, a .npy array of uint8 (N, H, W, 3), a folder of "
        f"images, a list file ({', '.join(LIST_SUFFIXES)}) or an image file"
    )
