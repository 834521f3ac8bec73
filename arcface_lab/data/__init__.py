"""The data wing: face crops (files, folders, synthetic faces) and verification pairs.

The names below were ``arcface_lab.data`` before the wings; they keep working.
"""

from arcface_lab.core.preprocess import Preprocess, check_images
from arcface_lab.data.images import (
    IMAGE_SUFFIXES,
    decode_image,
    images_from_spec,
    load_images,
    synthetic_faces,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "Preprocess",
    "check_images",
    "decode_image",
    "images_from_spec",
    "load_images",
    "synthetic_faces",
]
