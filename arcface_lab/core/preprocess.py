"""The preprocessing convention: face crops in, the model's input tensor out.

Inputs are aligned face crops as ``uint8`` arrays of shape ``(N, H, W, 3)`` in RGB
order. :class:`Preprocess` turns them into the float32 tensor a model expects; the
default is insightface's ``(x - 127.5) / 127.5``, RGB, NCHW, 112x112.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcface_lab.errors import DataError

__all__ = ["LAYOUTS", "Preprocess", "check_images"]

#: The tensor layouts a model may take.
LAYOUTS = ("NCHW", "NHWC")


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
        if self.layout not in LAYOUTS:
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
