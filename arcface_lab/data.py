"""Face crops in, model tensors out.

Inputs are aligned face crops as ``uint8`` arrays of shape ``(N, H, W, 3)`` in
RGB order: read from a ``.npy`` file, a folder of image files (decoded with
Pillow) or made up by :func:`synthetic_faces`. :class:`Preprocess` turns them
into the float32 tensor a model expects; the default is insightface's
``(x - 127.5) / 127.5``, RGB, NCHW, 112x112.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Preprocess",
    "check_images",
    "decode_image",
    "images_from_spec",
    "load_images",
    "synthetic_faces",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """How face crops become the model's input tensor.

    ``mean``/``std`` are applied per pixel value (``(x - mean) / std``);
    ``bgr`` swaps the channel order before normalizing; ``layout`` is the
    tensor layout the model takes; ``size`` is ``(height, width)``.
    """

    mean: float = 127.5
    std: float = 127.5
    bgr: bool = False
    layout: str = "NCHW"
    size: tuple[int, int] = (112, 112)

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise DataError(f"preprocess.layout: expected 'NCHW' or 'NHWC', got {self.layout!r}")
        if not self.std > 0:
            raise DataError(f"preprocess.std: expected a positive number, got {self.std!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise DataError(f"preprocess.size: expected (height, width), got {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields; :meth:`from_dict` reads them back."""
        return {
            "mean": self.mean,
            "std": self.std,
            "bgr": self.bgr,
            "layout": self.layout,
            "size": list(self.size),
        }

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> Preprocess:
        return cls(**{**fields, "size": tuple(fields["size"])})

    def input_shape(self, batch: int | str = "N") -> tuple[int | str, ...]:
        """The model input shape for ``batch`` images."""
        h, w = self.size
        return (batch, 3, h, w) if self.layout == "NCHW" else (batch, h, w, 3)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Turn ``uint8 (N, H, W, 3)`` RGB crops into a contiguous float32 tensor."""
        check_images(images, self.size)
        x = images[..., ::-1] if self.bgr else images
        x = (x.astype(np.float32) - np.float32(self.mean)) / np.float32(self.std)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)


def check_images(
    images: object, size: tuple[int, int] | None = None, source: str = "input"
) -> None:
    """Raise :class:`DataError` unless ``images`` is ``uint8 (N, H, W, 3)`` with N >= 1."""
    if not isinstance(images, np.ndarray):
        raise DataError(f"{source}: expected a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise DataError(f"{source}: expected dtype uint8 (0-255 RGB), got {images.dtype}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        raise DataError(f"{source}: expected shape (N, H, W, 3) with N >= 1, got {images.shape}")
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        h, w = size
        raise DataError(
            f"{source}: expected {h}x{w} aligned face crops, got "
            f"{images.shape[1]}x{images.shape[2]} (align and resize faces first)"
        )


def decode_image(data: bytes, source: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one encoded image (JPEG, PNG, ...) to ``uint8 (H, W, 3)`` RGB.

    ``size`` (height, width), when given, is checked, never silently resized:
    a crop of the wrong size is not an aligned face.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{source}: not a readable image ({exc})") from None
    if size is not None and rgb.shape[:2] != tuple(size):
        raise DataError(
            f"{source}: expected a {size[0]}x{size[1]} aligned face crop, "
            f"got {rgb.shape[0]}x{rgb.shape[1]}"
        )
    return rgb


def _read_image_file(path: Path, size: tuple[int, int] | None) -> np.ndarray:
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
        return np.stack([_read_image_file(p, size) for p in files])
    if path.suffix.lower() == ".npy":
        try:
            images = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        check_images(images, size, source=str(path))
        return images
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_image_file(path, size)[None]
    raise DataError(
        f"{path}: expected a .npy array of uint8 (N, H, W, 3), a folder of images "
        f"or an image file ({', '.join(IMAGE_SUFFIXES)})"
    )


#: Seed of the synthetic images of runs and benchmarks (``synthetic:N`` in a params file).
RUN_IMAGE_SEED = 7


def images_from_spec(
    spec: str, size: tuple[int, int] = (112, 112), seed: int = RUN_IMAGE_SEED
) -> tuple[np.ndarray, str]:
    """Face crops named by ``spec`` and their kind (``"synthetic"`` or ``"files"``).

    ``spec`` is ``synthetic`` / ``synthetic:N`` (``N`` deterministic synthetic faces,
    default 64), or a path for :func:`load_images`.
    """
    if spec == "synthetic" or spec.startswith("synthetic:"):
        n = spec.partition(":")[2] or "64"
        if not n.isdigit() or int(n) < 1:
            raise DataError(f"images {spec!r}: expected synthetic, synthetic:N (N >= 1) or a path")
        return synthetic_faces(int(n), seed=seed, size=size), "synthetic"
    return load_images(spec, size), "files"


def synthetic_faces(
    n: int,
    seed: int = 0,
    size: tuple[int, int] = (112, 112),
    identities: Sequence[int] | None = None,
    variation: float = 0.15,
) -> np.ndarray:
    """Deterministic face-like crops: smooth blobs on a skin-toned oval.

    Not faces, and labelled synthetic wherever they are used. Image ``i``
    shows identity ``identities[i]`` (default: ``i``); two images of one
    identity share the low-frequency layout and differ by a small shift,
    brightness change and noise scaled by ``variation``, so a model sees
    structured, correlated inputs rather than white noise.
    """
    if n < 1:
        raise DataError(f"synthetic_faces: expected n >= 1, got {n}")
    ids = list(range(n)) if identities is None else [int(i) for i in identities]
    if len(ids) != n:
        raise DataError(f"synthetic_faces: got {len(ids)} identities for {n} images")
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    oval = np.exp(-(((xx / 0.33) ** 2 + (yy / 0.42) ** 2) ** 2))
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i, identity in enumerate(ids):
        ident = np.random.default_rng([seed, identity])
        noise = np.random.default_rng([seed, identity, i + 1])
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
