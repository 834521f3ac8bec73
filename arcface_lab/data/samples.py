"""Real face photos that come inside registry packages, known by name (``samples:NAME``).

No dataset is downloaded: these are the demo photos a package ships, listed here with
their sha256, fetched once with the package's own client and verified like a zoo model
(:mod:`arcface_lab.data.packages`).

``face-api``: the six demo photos of the MIT-licensed npm package
``@vladmandic/face-api@1.7.15`` (``demo/sample1.jpg`` .. ``sample6.jpg``; Copyright (c)
Vladimir Mandic), 22 faces, several to a photo.
"""

from __future__ import annotations

from pathlib import Path

from arcface_lab.core.files import cached
from arcface_lab.data.packages import PackageFile, fetch_package_file
from arcface_lab.errors import InputError

__all__ = [
    "SAMPLES",
    "SAMPLES_PREFIX",
    "SKIMAGE_PHOTOS",
    "SKIMAGE_PREFIX",
    "fetch_samples",
    "skimage_photo",
]

SAMPLES_PREFIX = "samples:"
SKIMAGE_PREFIX = "skimage:"
#: scikit-image's colour photos with a face (public domain: NASA's Eileen Collins).
SKIMAGE_PHOTOS = ("astronaut",)

_FACE_API = "@vladmandic/face-api@1.7.15"
_FACE_API_PHOTOS = {
    "sample1.jpg": ("8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51", 144516),
    "sample2.jpg": ("7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691", 181758),
    "sample3.jpg": ("8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936", 221049),
    "sample4.jpg": ("729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc", 210824),
    "sample5.jpg": ("6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938", 166400),
    "sample6.jpg": ("9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87", 302445),
}

#: Each sample set: its license line and its files.
SAMPLES: dict[str, tuple[str, tuple[PackageFile, ...]]] = {
    "face-api": (
        f"MIT (Copyright (c) Vladimir Mandic; npm {_FACE_API})",
        tuple(
            PackageFile(_FACE_API, f"package/demo/{name}", name, sha, size)
            for name, (sha, size) in _FACE_API_PHOTOS.items()
        ),
    ),
}


def fetch_samples(spec: str, cache_dir: Path) -> list[Path]:
    """The photos of ``samples:NAME`` (or one of them, ``samples:NAME/FILE``), fetched once
    into ``cache_dir/samples`` and verified.

    Raises:
        InputError: no such sample set or photo, or its package could not be fetched.
        ModelIntegrityError: a source gave bytes that are not the listed photo.
    """
    name, _, one = spec.removeprefix(SAMPLES_PREFIX).partition("/")
    if name not in SAMPLES:
        raise InputError(
            f"photos {spec}: no sample set {name!r}; expected samples:<{'|'.join(SAMPLES)}>",
            argument="photos",
        )
    items = [i for i in SAMPLES[name][1] if not one or i.file == one]
    if not items:
        names = ", ".join(i.file for i in SAMPLES[name][1])
        raise InputError(
            f"photos {spec}: no photo {one!r} in {name}; expected one of {names}",
            argument="photos",
        )
    return [
        fetch_package_file(
            item, cache_dir, kind="samples", what=f"photos {spec}", argument="photos"
        )
        for item in items
    ]


def skimage_photo(spec: str, cache_dir: Path) -> Path:
    """``skimage:NAME``: a sample image scikit-image ships (``astronaut``), as a cached PNG.

    Raises:
        InputError: scikit-image is missing or has no such colour sample image.
    """
    name = spec.removeprefix(SKIMAGE_PREFIX)
    if name not in SKIMAGE_PHOTOS:
        raise InputError(
            f"photos {spec}: expected skimage:<{'|'.join(SKIMAGE_PHOTOS)}>", argument="photos"
        )
    try:
        from skimage import data
    except ImportError:
        raise InputError(
            f"photos {spec}: needs scikit-image (pip install 'arcface_lab[faces]')",
            argument="photos",
        ) from None
    from PIL import Image

    def make(tmp: Path) -> None:
        Image.fromarray(getattr(data, name)()).save(tmp, format="PNG")

    return cached(cache_dir / "samples" / "skimage" / f"{name}.png", make, suffix=".png")
