"""Five face landmarks in, the ArcFace 112x112 crop out.

ArcFace models are trained on faces warped by a similarity transform (rotation, uniform
scale, translation) that puts five landmarks (eye centres, nose tip, mouth corners) on
fixed points of a 112x112 crop: insightface's ``arcface_dst`` (:data:`ARCFACE_TEMPLATE`).
:func:`align_face` estimates that transform by least squares (Umeyama, through
scikit-image's :class:`~skimage.transform.SimilarityTransform`) and warps the photo with
bilinear sampling. :func:`read_photo` reads a photo the way a camera meant it (EXIF
orientation applied).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arcface_lab.errors import DataError, InputError

__all__ = [
    "ARCFACE_SIZE",
    "ARCFACE_TEMPLATE",
    "PHOTO_SUFFIXES",
    "align_face",
    "apply_similarity",
    "estimate_transform",
    "list_photos",
    "read_photo",
]

#: insightface's five reference points for a 112x112 crop, (x, y): left eye, right eye,
#: nose tip, left and right mouth corner (as seen in the image).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_SIZE = (112, 112)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _skimage_transform():  # type: ignore[no-untyped-def]
    try:
        from skimage import transform
    except ImportError:
        raise InputError(
            "face alignment needs scikit-image: pip install 'arcface_lab[faces]'"
        ) from None
    return transform


def estimate_transform(landmarks: np.ndarray) -> np.ndarray:
    """The 3x3 similarity matrix taking ``landmarks`` (5, 2) onto :data:`ARCFACE_TEMPLATE`.

    Raises:
        DataError: the points are not five finite (x, y) pairs, or they are degenerate
            (all on one spot), so no similarity transform maps them.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise DataError(f"landmarks: expected five finite (x, y) points, got shape {pts.shape}")
    transform = _skimage_transform()
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        found = transform.SimilarityTransform.from_estimate(pts, ARCFACE_TEMPLATE)
        ok = bool(found)
    else:  # pragma: no cover - older scikit-image
        found = transform.SimilarityTransform()
        ok = bool(found.estimate(pts, ARCFACE_TEMPLATE))
    matrix = np.asarray(getattr(found, "params", np.full((3, 3), np.nan)))
    if not ok or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise DataError(f"landmarks {pts.round(1).tolist()}: no similarity transform maps them")
    return matrix


def apply_similarity(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` ``(K, 2)`` moved by the 3x3 matrix ``matrix`` (x, y in and out)."""
    pts = np.asarray(points, dtype=np.float64)
    moved: np.ndarray = (np.c_[pts, np.ones(len(pts))] @ np.asarray(matrix).T)[:, :2]
    return moved


def align_face(photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The ``uint8 (112, 112, 3)`` ArcFace crop of the face whose five points are given.

    ``photo`` is ``uint8 (H, W, 3)``; pixels the crop takes from outside the photo are
    black (as insightface's ``cv2.warpAffine`` default).
    """
    matrix = estimate_transform(landmarks)
    transform = _skimage_transform()
    warped = transform.warp(
        photo,
        transform.SimilarityTransform(matrix=matrix).inverse,
        output_shape=ARCFACE_SIZE,
        order=1,
        mode="constant",
        cval=0.0,
        preserve_range=True,
    )
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8)


def read_photo(path: str | Path, max_pixels: int = 50_000_000) -> np.ndarray:
    """A photo as ``uint8 (H, W, 3)`` RGB, its EXIF orientation applied.

    Raises:
        DataError: not a readable image, or more than ``max_pixels`` pixels (checked from
            the header, before decoding).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise DataError(
                    f"{path}: {img.width}x{img.height} is more than {max_pixels} pixels; "
                    "not decoded"
                )
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: not decoded, too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
    return rgb


def list_photos(spec: str | Path, cache_dir: Path | None = None) -> list[Path]:
    """The photos ``spec`` names: one image file, every image file of a folder (sorted),
    a sample set shipped in a package (``samples:NAME`` or ``samples:NAME/FILE``, fetched
    into ``cache_dir``), or ``skimage:astronaut``.

    Raises:
        InputError: nothing there, or a folder without image files.
    """
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.data.samples import (
        SAMPLES_PREFIX,
        SKIMAGE_PREFIX,
        fetch_samples,
        skimage_photo,
    )

    if str(spec).startswith(SAMPLES_PREFIX):
        return fetch_samples(str(spec), cache_dir or default_cache_root())
    if str(spec).startswith(SKIMAGE_PREFIX):
        return [skimage_photo(str(spec), cache_dir or default_cache_root())]
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        photos = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
        )
        if not photos:
            raise InputError(
                f"{path}: no photos in this folder (expected {', '.join(PHOTO_SUFFIXES)} files)",
                argument="photos",
            )
        return photos
    raise InputError(f"{path}: no such file or folder of photos", argument="photos")
