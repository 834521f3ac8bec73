"""Verification pair sets: insightface ``.bin`` files, CSV lists, synthetic pairs.

A :class:`PairSet` holds two aligned ``uint8 (N, H, W, 3)`` RGB crop arrays and
a bool label per pair. Three sources:

* ``.bin`` (:func:`load_bin`): insightface's ``lfw.bin``, ``cfp_fp.bin``,
  ``agedb_30.bin``: a pickle of ``(images, issame)`` where ``images`` lists
  ``2N`` encoded JPEG/PNG crops (pair ``i`` is images ``2i`` and ``2i + 1``)
  and ``issame`` lists ``N`` bools. insightface reads them with a plain
  ``pickle.load``, which runs whatever code the file names. Here a
  restricted unpickler allows no global at all except the two that Python 3
  writes for ``bytes`` at protocols 0-2 (``_codecs.encode`` of a latin-1
  string and ``bytes()`` for an empty one), each replaced by a stand-in that
  only builds bytes; anything else is an :class:`UnsafeFileError` before it
  runs. Python 2 files store the crops as ``str`` (``STRING``/``BINSTRING``/
  ``SHORT_BINSTRING`` opcodes), read back as bytes (``encoding="bytes"``).
  Unlike insightface, crops of the wrong size are refused, not resized.
* ``.csv`` (:func:`load_csv`): header ``path_a,path_b,same``; image paths
  relative to the CSV's folder (and kept inside it); ``same`` in
  ``0/1/true/false``.
* ``synthetic`` (:func:`synthetic_pairs`): made-up faces from
  :func:`arcface_lab.data.synthetic_faces`, labelled synthetic.

No maintained library reads insightface ``.bin`` files without unpickling
them unrestricted, which is why the loader is written here.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.preprocess import check_images
from arcface_lab.data.images import (
    SYNTHETIC_PAIRS,
    decode_image,
    parse_synthetic,
    synthetic_faces,
)
from arcface_lab.errors import ArcfaceLabError, DataError, UnsafeFileError

__all__ = [
    "DEFAULT_MAX_BIN_BYTES",
    "PAIR_KINDS",
    "PairSet",
    "load_bin",
    "load_csv",
    "load_pairs",
    "save_csv",
    "synthetic_pairs",
]

#: Largest ``.bin`` file :func:`load_bin` reads by default (2 GiB).
DEFAULT_MAX_BIN_BYTES = 2 * 1024**3
PAIR_KINDS = ("bin", "csv", "synthetic", "real")
CSV_HEADER = ("path_a", "path_b", "same")
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True, eq=False)
class PairSet:
    """``N`` face pairs: ``images_a[i]`` and ``images_b[i]`` show one person iff ``same[i]``."""

    images_a: np.ndarray
    images_b: np.ndarray
    same: np.ndarray
    kind: str
    source: str

    def __post_init__(self) -> None:
        if self.kind not in PAIR_KINDS:
            raise DataError(
                f"{self.source}: pair set kind must be one of {PAIR_KINDS}, got {self.kind!r}"
            )
        check_images(self.images_a, source=f"{self.source}: images_a")
        check_images(self.images_b, self.images_a.shape[1:3], source=f"{self.source}: images_b")
        n = self.images_a.shape[0]
        if self.images_b.shape[0] != n:
            raise DataError(
                f"{self.source}: images_b: expected {n} images like images_a, "
                f"got {self.images_b.shape[0]}"
            )
        same = self.same
        if not isinstance(same, np.ndarray) or same.dtype != np.bool_ or same.shape != (n,):
            raise DataError(
                f"{self.source}: same: expected a bool array of shape ({n},), got "
                f"{getattr(same, 'dtype', type(same).__name__)} {getattr(same, 'shape', '')}"
            )

    @property
    def n_pairs(self) -> int:
        """Number of pairs."""
        return int(self.same.shape[0])


# --------------------------------------------------------------------------- .bin


def _latin1_bytes(*args: Any) -> bytes:
    """Stand-in for ``_codecs.encode``: only ``encode(str, "latin1")``, as pickle writes it."""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise pickle.UnpicklingError(f"_codecs.encode called as {args!r:.80}, expected (str, 'latin1')")


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``bytes``: only ``bytes()``, as pickle writes an empty bytes object."""
    if args:
        raise pickle.UnpicklingError(f"bytes called with {args!r:.80}, expected no arguments")
    return b""


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


class _BinUnpickler(pickle.Unpickler):
    """Unpickles data only: no class, function or module except the bytes stand-ins."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeFileError(
                f"{self._source}: refusing to unpickle the global {module}.{name}; an insightface "
                f".bin holds only encoded images and bool labels (a pickle naming code can run it)"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(
            f"{self._source}: refusing a pickle persistent id; an insightface .bin holds only "
            f"encoded images and bool labels"
        )


def _describe(obj: object) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"


def _unpickle_bin(path: Path, max_bytes: int) -> object:
    if not path.is_file():
        raise DataError(f"{path}: no such .bin file")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"{path}: {size} bytes is over the {max_bytes}-byte cap for .bin files")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return _BinUnpickler(io.BytesIO(data), str(path)).load()
    except ArcfaceLabError:
        raise
    except Exception as exc:  # any decoding failure of untrusted bytes is a data error
        raise DataError(
            f"{path}: not a complete insightface .bin pickle, truncated or corrupt "
            f"({type(exc).__name__}: {exc})"
        ) from None


def _check_bin_structure(obj: object, source: str) -> tuple[list[bytes], list[bool]]:
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DataError(f"{source}: expected a pickled pair (images, issame), got {_describe(obj)}")
    bins, labels = obj
    if not isinstance(bins, list | tuple):
        raise DataError(f"{source}: expected a list of encoded images first, got {_describe(bins)}")
    if not isinstance(labels, list | tuple):
        raise DataError(f"{source}: expected a list of bool labels second, got {_describe(labels)}")
    if not labels:
        raise DataError(f"{source}: expected at least one pair, got no labels")
    if len(bins) % 2:
        raise DataError(
            f"{source}: expected an even number of images (two per pair), got {len(bins)}"
        )
    if len(bins) != 2 * len(labels):
        raise DataError(
            f"{source}: expected 2 images per label (2 x {len(labels)} = {2 * len(labels)}), "
            f"got {len(bins)} images"
        )
    same: list[bool] = []
    for i, value in enumerate(labels):
        if type(value) is bool or (type(value) is int and value in (0, 1)):
            same.append(bool(value))
        else:
            raise DataError(f"{source}: label {i}: expected a bool (or 0/1), got {value!r:.40}")
    images: list[bytes] = []
    for i, blob in enumerate(bins):
        if not isinstance(blob, bytes | bytearray):
            raise DataError(
                f"{source}: image {i}: expected encoded image bytes, got {_describe(blob)}"
            )
        if not (blob.startswith(_JPEG_MAGIC) or blob.startswith(_PNG_MAGIC)):
            raise DataError(
                f"{source}: image {i}: expected JPEG or PNG bytes, "
                f"got a header of {bytes(blob[:8])!r}"
            )
        images.append(bytes(blob))
    return images, same


def load_bin(
    path: str | Path,
    *,
    image_size: tuple[int, int] = (112, 112),
    max_bytes: int = DEFAULT_MAX_BIN_BYTES,
) -> PairSet:
    """Load an insightface verification ``.bin`` (``lfw.bin``, ...) without unsafe unpickling.

    Raises :class:`UnsafeFileError` for a pickle that names any code, and
    :class:`DataError` for a missing, oversized, truncated or malformed file.
    """
    path = Path(path)
    obj = _unpickle_bin(path, max_bytes)
    blobs, same = _check_bin_structure(obj, str(path))
    h, w = image_size
    images = np.empty((len(blobs), h, w, 3), dtype=np.uint8)
    for i, blob in enumerate(blobs):
        images[i] = decode_image(blob, f"{path}: image {i}", image_size)
    return PairSet(
        images_a=np.ascontiguousarray(images[0::2]),
        images_b=np.ascontiguousarray(images[1::2]),
        same=np.array(same, dtype=bool),
        kind="bin",
        source=str(path),
    )


# --------------------------------------------------------------------------- .csv

_TRUE = {"1", "true"}
_FALSE = {"0", "false"}


def _csv_image(
    folder: Path, cell: str, where: str, size: tuple[int, int], cache: dict[str, np.ndarray]
) -> np.ndarray:
    rel = cell.strip()
    if not rel:
        raise DataError(f"{where}: expected an image path, got an empty field")
    norm = os.path.normpath(rel)
    if Path(rel).is_absolute() or os.path.isabs(norm) or Path(norm).parts[:1] == ("..",):
        raise UnsafeFileError(
            f"{where}: {rel!r} is outside the CSV's folder; expected a path relative to {folder}"
        )
    if norm not in cache:
        file = folder / norm
        root = folder.resolve()
        if file.exists() and not file.resolve().is_relative_to(root):
            raise UnsafeFileError(
                f"{where}: {rel!r} is a link to {file.resolve()}, outside the CSV's folder "
                f"{root}; expected images inside it (copy them in instead of linking)"
            )
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DataError(f"{where}: cannot read {file} ({exc.strerror or exc})") from None
        cache[norm] = decode_image(data, f"{where}: {rel}", size)
    return cache[norm]


def load_csv(path: str | Path, image_size: tuple[int, int] = (112, 112)) -> PairSet:
    """Load pairs from a CSV with header ``path_a,path_b,same``.

    Paths are relative to the CSV's folder and may not leave it; ``same`` is
    ``0``, ``1``, ``true`` or ``false`` (any case). Blank lines are skipped.
    Errors name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .csv file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    folder = path.parent
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    cache: dict[str, np.ndarray] = {}
    images_a: list[np.ndarray] = []
    images_b: list[np.ndarray] = []
    same: list[bool] = []
    try:
        for row in reader:
            line = reader.line_num
            where = f"{path}: line {line}"
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                if tuple(header) != CSV_HEADER:
                    raise DataError(
                        f"{where}: expected the header {','.join(CSV_HEADER)!r}, "
                        f"got {','.join(header)!r}"
                    )
                continue
            if len(row) != 3:
                raise DataError(f"{where}: expected 3 fields (path_a,path_b,same), got {len(row)}")
            flag = row[2].strip().lower()
            if flag not in _TRUE | _FALSE:
                raise DataError(f"{where}: same: expected 0, 1, true or false, got {row[2]!r}")
            images_a.append(_csv_image(folder, row[0], where, image_size, cache))
            images_b.append(_csv_image(folder, row[1], where, image_size, cache))
            same.append(flag in _TRUE)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    if header is None:
        raise DataError(f"{path}: empty file; expected the header {','.join(CSV_HEADER)!r}")
    if not same:
        raise DataError(f"{path}: expected at least one pair after the header, got none")
    return PairSet(
        images_a=np.stack(images_a),
        images_b=np.stack(images_b),
        same=np.array(same, dtype=bool),
        kind="csv",
        source=str(path),
    )


# --------------------------------------------------------------------------- synthetic


def synthetic_pairs(
    n_pairs: int, seed: int = 0, image_size: tuple[int, int] = (112, 112)
) -> PairSet:
    """``n_pairs`` deterministic synthetic pairs, alternating same / different.

    Pair ``i`` is a same pair when ``i`` is even (interleaved, so every
    10-fold split sees both kinds): two variants of identity ``2i``.
    Otherwise it shows identities ``2i`` and ``2i + 1``. Same ``seed`` ->
    identical arrays.
    """
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise DataError(f"synthetic_pairs: expected n_pairs >= 1, got {n_pairs!r}")
    same = np.arange(n_pairs) % 2 == 0
    identities: list[int] = []
    for i, is_same in enumerate(same):
        identities += [2 * i, 2 * i if is_same else 2 * i + 1]
    images = synthetic_faces(2 * n_pairs, seed=seed, size=image_size, identities=identities)
    return PairSet(
        images_a=np.ascontiguousarray(images[0::2]),
        images_b=np.ascontiguousarray(images[1::2]),
        same=same,
        kind="synthetic",
        source=f"synthetic:{n_pairs} (seed {seed}, not real faces)",
    )


def load_pairs(spec: str | Path, image_size: tuple[int, int] = (112, 112)) -> PairSet:
    """A pair set from ``"synthetic"``, ``"synthetic:N"`` (:data:`SYNTHETIC_PAIRS` for the bare
    word), a ``.bin`` or a ``.csv``."""
    text = str(spec)
    count = parse_synthetic(spec, "pairs", SYNTHETIC_PAIRS)
    if count is not None:
        return synthetic_pairs(count, image_size=image_size)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (".bin", ".csv"):
        raise DataError(
            f"pairs {text!r}: expected an insightface .bin, a .csv (path_a,path_b,same) "
            f"or 'synthetic[:N]'"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such pair file")
    if suffix == ".bin":
        return load_bin(path, image_size=image_size)
    return load_csv(path, image_size)


def save_csv(pairs: PairSet, folder: str | Path) -> Path:
    """Write ``pairs`` as ``folder/pairs.csv`` with its images as PNG files beside it.

    PNG is lossless, so :func:`load_csv` gives back the same arrays (the pairs a worker
    process reads). Returns the CSV's path.
    """
    from PIL import Image

    from arcface_lab.core.files import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [",".join(CSV_HEADER)]
    for i in range(pairs.n_pairs):
        names = (f"{i:05d}a.png", f"{i:05d}b.png")
        Image.fromarray(pairs.images_a[i]).save(folder / names[0])
        Image.fromarray(pairs.images_b[i]).save(folder / names[1])
        lines.append(f"{names[0]},{names[1]},{int(bool(pairs.same[i]))}")
    csv = folder / "pairs.csv"
    write_text_atomic(csv, "\n".join(lines) + "\n")
    return csv
