"""What a face detector gives: a box, a score and five landmarks per face (:class:`Detection`),
the protocol every detector follows (:class:`FaceDetector`), and greedy NMS.

Shared by :mod:`arcface_lab.models.faces` (photos to aligned crops) and the detectors
(:mod:`arcface_lab.models.mtcnn`, :class:`arcface_lab.models.faces.OnnxFaceFinder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["Detection", "FaceDetector", "nms"]


@dataclass(frozen=True)
class Detection:
    """One face in a photo, in photo pixels."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # (5, 2) x, y: left eye, right eye, nose, mouth left, mouth right

    @property
    def short_side(self) -> float:
        x1, y1, x2, y2 = self.box
        return min(x2 - x1, y2 - y1)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


class FaceDetector(Protocol):
    """Anything that finds faces and their five landmarks in an RGB photo."""

    name: str

    def detect(self, photo: np.ndarray) -> list[Detection]:
        """Faces in ``photo`` (``uint8 (H, W, 3)`` RGB), best score first."""
        ...


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_max]
    return keep
