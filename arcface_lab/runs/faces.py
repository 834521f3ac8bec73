"""The face pipeline: photos in; detected, aligned and embedded faces out, through the registry.

A team's own photos go through the same engines that were validated: :class:`FacePipeline`
finds and aligns every face (:mod:`arcface_lab.models.faces`) and embeds the crops with
the engine :func:`~arcface_lab.engines.registry.create_engine` picks from a backend chain,
its fallbacks recorded like any other engine's.

Example::

    from arcface_lab.runs.faces import FacePipeline

    with FacePipeline("zoo:faceplugin-mbf", chain="openvino,onnxruntime") as pipe:
        result = pipe.embed_photos("photos/")
    result.embeddings      # (N, 512) float32, L2-normalized, one row per aligned face
    result.aligned.index() # which photo and box each row came from
    result.engine          # backend, precision, device, fallbacks
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from arcface_lab.config.params import FacesParams, RealignParams
from arcface_lab.core.files import default_cache_root
from arcface_lab.data.align import ARCFACE_SIZE, list_photos
from arcface_lab.engines.registry import create_engine
from arcface_lab.errors import InputError
from arcface_lab.models.faces import (
    AlignResult,
    FaceDetector,
    FaceSpecs,
    open_face_finder,
    realign,
)
from arcface_lab.models.source import ModelSource, resolve_model

__all__ = ["FaceEmbeddings", "FacePipeline", "alignment_check"]


@dataclass
class FaceEmbeddings:
    """Embeddings of every aligned face, the alignment they came from, and what ran."""

    embeddings: np.ndarray
    aligned: AlignResult
    engine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, **self.aligned.to_dict()}


class FacePipeline:
    """Detect, align and embed: a face finder and an engine from the registry.

    Args:
        model: a model spec (``zoo:NAME``, ``.onnx``, ``.pth``, ``seeded:ARCH``) or a
            resolved :class:`ModelSource`; its input must be the 112x112 ArcFace crop.
        chain: the backend chain for :func:`create_engine` (``"auto"`` by default).
        precision: the engine's precision.
        faces: detector, landmarks and thresholds (a params file's ``faces:`` block).
        detector: a :class:`FaceDetector` of your own, instead of ``faces``' models.
        cache_dir: where the face models (and a zoo embedder) and aligned photos are cached.
        strict: fail instead of falling back to the next backend.
        engine_kwargs: passed to :func:`create_engine` (``device``, ``store``, ...).
    """

    def __init__(
        self,
        model: str | ModelSource,
        chain: str | Sequence[str] = "auto",
        precision: str = "fp32",
        *,
        faces: FacesParams | None = None,
        detector: FaceDetector | None = None,
        cache_dir: str | Path | None = None,
        strict: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        self.faces = faces or FacesParams()
        cache = Path(cache_dir) if cache_dir is not None else default_cache_root()
        self.cache_dir = cache
        self.model = (
            model if isinstance(model, ModelSource) else resolve_model(model, cache_dir=cache)
        )
        if tuple(self.model.preprocess.size) != ARCFACE_SIZE:
            raise InputError(
                f"model {self.model.spec}: takes {self.model.preprocess.size[0]}x"
                f"{self.model.preprocess.size[1]} input; aligned faces are "
                f"{ARCFACE_SIZE[0]}x{ARCFACE_SIZE[1]}",
                argument="model",
            )
        self.detector = detector or open_face_finder(self.faces, cache)
        # photos are aligned once per pipeline, and kept in the aligned-photo store when
        # the detector is the one the params name
        self._photos = FaceSpecs(self.faces, cache, self.detector, store=detector is None)
        self.engine = create_engine(
            chain, self.model, precision=precision, strict=strict, **engine_kwargs
        )

    def __enter__(self) -> FacePipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()

    def align(self, photos: str | Path | Sequence[str | Path]) -> AlignResult:
        """Every face of ``photos`` (a photo, a folder, ``samples:NAME`` or a list), aligned."""
        paths = (
            list_photos(photos, self.cache_dir)
            if isinstance(photos, (str, Path))
            else [Path(p) for p in photos]
        )
        return self._photos.photos(paths)

    def embed_photos(
        self, photos: str | Path | Sequence[str | Path], normalize: bool = True
    ) -> FaceEmbeddings:
        """Align every face of ``photos`` and embed the crops (one row per aligned face)."""
        aligned = self.align(photos)
        if len(aligned.faces):
            emb = self.engine.embed(aligned.faces, normalize=normalize).astype(np.float32)
        else:
            dim = self.model.onnx_info().embedding_dim or 0
            emb = np.zeros((0, dim), dtype=np.float32)
        return FaceEmbeddings(emb, aligned, self.engine.info.to_dict())


def alignment_check(
    crops: np.ndarray,
    detector: FaceDetector,
    engine: Any,
    targets: RealignParams,
    landmarks: np.ndarray | None = None,
) -> dict[str, Any]:
    """Re-alignment drift of aligned ``crops``: each found and aligned again by
    ``detector``, the landmarks' distance to where the first alignment put them (its
    ``landmarks`` in the photos; without them, the template), and each re-aligned crop's
    embedding (``engine``) against the first one's; judged by ``targets``. The result
    names the engine that embedded them (``engine``).

    Raises:
        InputError: ``crops`` are not aligned 112x112 RGB crops.
    """
    again = realign(crops, detector, landmarks)
    kept = np.setdiff1d(np.arange(len(crops)), again.lost)
    cosine = None
    if kept.size:
        first = engine.embed(crops[kept], normalize=True).astype(np.float64)
        second = engine.embed(again.crops[kept], normalize=True).astype(np.float64)
        cosine = np.sum(first * second, axis=1)
    summary = again.summary(targets, cosine)
    if cosine is not None:
        for row, value in zip(kept.tolist(), cosine.tolist(), strict=True):
            summary["per_face"][row]["cosine"] = round(float(value), 6)
    summary["engine"] = engine.info.to_dict()
    return summary
