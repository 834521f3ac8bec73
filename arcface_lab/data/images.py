"""Face crops in, model tensors out.

Inputs are aligned face crops as ``uint8`` arrays of shape ``(N, H, W, 3)`` in
RGB order: read from a ``.npy`` file, a folder of image files (decoded with
Pillow) or made up by :func:`synthetic_faces`. :class:`~arcface_lab.core.preprocess.Preprocess`
(re-exported here) turns them into the float32 tensor a model expects.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arcface_lab.core.preprocess import Preprocess, check_images
from arcface_lab.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Preprocess",
    "check_images",
    "decode_image",
    "images_from_spec",
    "load_images",
    "parse_synthetic",
    "read_image_file",
    "synthetic_faces",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def decode_image(data: bytes, source: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, ...) to ``uint8 (H, W, 3)`` RGB.

    ``size`` (height, width), when given, is checked, never silently resized:
    a crop of the wrong size is not an aligned face.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            # the header's size is checked before any pixel is decoded
            if size is not None and (img.height, img.width) != tuple(size):
                raise DataError(
                    f"{source}: expected a {size[0]}x{size[1]} aligned face crop, "
                    f"got {img.height}x{img.width}"
                )
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{source}: not decoded, too many pixels for a face crop ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{source}: not a readable image ({exc})") from None
    return rgb


def read_image_file(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image file decoded to ``uint8 (H, W, 3)`` RGB (checked against ``size`` when given)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path), size)


def load_images(path: str | Path, size: tuple[int, int] = (112, 112)) -> np.ndarray:
    """Load face crops from a ``.npy`` file, a folder of images or one image file.

    Returns ``uint8 (N, H, W, 3)`` RGB. Folders are read in sorted name order;
    files with other suffixes are ignored.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return np.stack([read_image_file(p, size) for p in files])
    if path.suffix.lower() == ".npy":
        try:
            images = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc or 'empty file'})") from None
        check_images(images, size, source=str(path))
        return images
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_file(path, size)[None]
    raise DataError(
        f"{path}: expected a .npy array of uint8 (N, H, W, 3), a folder of images "
        f"or an image file ({', '.join(IMAGE_SUFFIXES)})"
    )


#: Seed of the synthetic images of runs and benchmarks (``synthetic:N`` in a params file).
RUN_IMAGE_SEED = 7

#: What a bare ``synthetic`` (no count) means: this many images, or this many pairs.
SYNTHETIC_IMAGES = 64
SYNTHETIC_PAIRS = 200


def parse_synthetic(spec: object, what: str, default: int) -> int | None:
    """The ``N`` of ``"synthetic"`` / ``"synthetic:N"`` (``default`` for the bare word).

    None when ``spec`` names something else (a path). ``what`` ("images", "pairs")
    goes into the error for a bad count.

    Raises:
        DataError: ``synthetic:`` followed by anything but a positive integer.
    """
    if not isinstance(spec, str) or not (spec == "synthetic" or spec.startswith("synthetic:")):
        return None
    count = spec.partition(":")[2] or str(default)
    if not count.isdigit() or int(count) < 1:
        raise DataError(
            f"{what} {spec!r}: expected 'synthetic' or 'synthetic:N' with N a positive integer"
        )
    return int(count)


def images_from_spec(
    spec: str, size: tuple[int, int] = (112, 112), seed: int = RUN_IMAGE_SEED
) -> tuple[np.ndarray, str]:
    """Face crops named by ``spec`` and their kind (``"synthetic"`` or ``"files"``).

    ``spec`` is ``synthetic`` / ``synthetic:N`` (``N`` deterministic synthetic faces,
    :data:`SYNTHETIC_IMAGES` for the bare word), or a path for :func:`load_images`.
    """
    n = parse_synthetic(spec, "images", SYNTHETIC_IMAGES)
    if n is not None:
        return synthetic_faces(n, seed=seed, size=size), "synthetic"
    return load_images(spec, size), "files"


def synthetic_faces(
    n: int,
    seed: int = 0,
    size: tuple[int, int] = (112, 112),
    identities: Sequence[int] | None = None,
    variation: float = 0.15,
    start: int = 0,
) -> np.ndarray:
    """Deterministic face-like crops: smooth blobs on a skin-toned oval.

    Not faces, and labelled synthetic wherever they are used. Image ``i``
    shows identity ``identities[i]`` (default: ``i``); two images of one
    identity share the low-frequency layout and differ by a small shift,
    brightness change and noise scaled by ``variation``, so a model sees
    structured, correlated inputs rather than white noise.

    ``start`` makes these images ``start .. start + n - 1`` of a longer set:
    ``synthetic_faces(n, seed, start=s)`` equals ``synthetic_faces(s + n, seed)[s:]``
    (identities default to the image's index in the whole set), so a stream can
    make any slice of a set of any size without making the rest.
    """
    if n < 1:
        raise DataError(f"synthetic_faces: expected n >= 1, got {n}")
    if start < 0:
        raise DataError(f"synthetic_faces: expected start >= 0, got {start}")
    ids = list(range(start, start + n)) if identities is None else [int(i) for i in identities]
    if len(ids) != n:
        raise DataError(f"synthetic_faces: got {len(ids)} identities for {n} images")
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    oval = np.exp(-(((xx / 0.33) ** 2 + (yy / 0.42) ** 2) ** 2))
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, identity in enumerate(ids):
        ident = np.random.default_rng([seed, identity])
        noise = np.random.default_rng([seed, identity, start + i + 1])
        skin = ident.uniform([150, 95, 70], [235, 190, 160]).astype(np.float32)
        dy, dx = noise.normal(0.0, 0.02 * variation / 0.15, size=2)
        img = oval[..., None] * skin + (1 - oval[..., None]) * ident.uniform(20, 120, size=3)
        for _ in range(6):  # eyes, brows, nose, mouth-like blobs at identity-specific spots
            cy, cx = ident.uniform(-0.25, 0.3), ident.uniform(-0.22, 0.22)
            sy, sx = ident.uniform(0.02, 0.07, size=2)
            blob = np.exp(-(((xx - cx - dx) / sx) ** 2 + ((yy - cy - dy) / sy) ** 2))
            img -= blob[..., None] * ident.uniform(40, 110, size=3)
        img *= 1.0 + noise.normal(0.0, variation / 3)
        img += noise.normal(0.0, 40 * variation, size=img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out
