"""Finding faces in photos: detect, five landmarks, aligned ArcFace crops, a record per photo.

A :class:`FaceDetector` turns an RGB photo into :class:`Detection`\\ s (box, score, five
landmarks in photo pixels); the detector is pluggable. The first one,
:class:`OnnxFaceFinder`, runs two ONNX models through ONNX Runtime: by default the
face detector and the 68-point landmark model of the MIT npm package
``faceplugin-face-recognition-js`` (``zoo:faceplugin-detect``,
``zoo:faceplugin-landmarks``).

:func:`align_photos` runs a detector over photos and warps every face large enough to
the ArcFace 112x112 template (:func:`arcface_lab.data.align.align_face`). A photo that
cannot be read, has no face, or only faces too small is a record saying so
(:data:`PHOTO_STATUSES`), never a failure of the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from arcface_lab.config.params import FacesParams
from arcface_lab.data.align import ARCFACE_SIZE, align_face, read_photo
from arcface_lab.errors import DataError, InputError

__all__ = [
    "FACES_PREFIX",
    "PHOTO_STATUSES",
    "AlignResult",
    "Detection",
    "FaceDetector",
    "FaceRecord",
    "FaceSpecs",
    "OnnxFaceFinder",
    "PhotoRecord",
    "align_photos",
    "align_spec",
    "five_points",
    "nms",
    "open_face_finder",
    "real_pairs",
]

#: ``ok``: at least one face aligned; ``no_face``: nothing above the score; ``too_small``:
#: faces found, none large enough; ``unreadable``: not an image we could decode.
PHOTO_STATUSES = ("ok", "no_face", "too_small", "unreadable")


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


def five_points(points68: np.ndarray) -> np.ndarray:
    """The five ArcFace landmarks from the 68 of iBUG 300-W (eye centres, nose tip, mouth)."""
    p = np.asarray(points68, dtype=np.float64).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


class OnnxFaceFinder:
    """A box detector and a 68-point landmark model, both ONNX, run by ONNX Runtime.

    The detector takes the whole photo resized to its input (RGB, NCHW,
    ``(x - 127) / 128``) and gives ``scores`` (1, A, 2) and corner-form ``boxes``
    (1, A, 4) normalized to the photo. The landmark model takes a square grayscale crop
    around each box (side the box height, ``x / 256``) and gives 136 values, x, y pairs
    normalized to the crop.
    """

    def __init__(
        self,
        detector: Path,
        landmarks: Path,
        score_min: float,
        nms_iou: float,
        name: str = "onnx",
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.name = name
        self.score_min = score_min
        self.nms_iou = nms_iou
        self._det = self._session(ort, detector, options)
        self._lmk = self._session(ort, landmarks, options)
        shape = self._det.get_inputs()[0].shape
        self._det_hw = (int(shape[2]), int(shape[3]))
        lshape = self._lmk.get_inputs()[0].shape
        self._lmk_hw = (int(lshape[2]), int(lshape[3]))

    @staticmethod
    def _session(ort: Any, path: Path, options: Any) -> Any:
        try:
            return ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for a bad file
            raise InputError(f"{path}: not a face model ONNX Runtime can load ({exc})") from None

    def detect(self, photo: np.ndarray) -> list[Detection]:
        from PIL import Image

        h, w = photo.shape[:2]
        dh, dw = self._det_hw
        resized = Image.fromarray(photo).resize((dw, dh), Image.Resampling.BILINEAR)
        small = np.asarray(resized, np.float32)
        x = ((small - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self._det.run(["scores", "boxes"], {self._det.get_inputs()[0].name: x})
        score = scores[0, :, 1]
        hit = score >= self.score_min
        if not hit.any():
            return []
        found = boxes[0][hit] * np.array([w, h, w, h], np.float32)
        found = np.clip(found, 0, [w, h, w, h])
        kept = nms(found, score[hit], self.nms_iou)
        gray = Image.fromarray(photo).convert("L")
        return [self._landmarks(gray, found[i], float(score[hit][i])) for i in kept]

    def _landmarks(self, gray: Any, box: np.ndarray, score: float) -> Detection:
        from PIL import Image

        x1, y1, x2, y2 = (float(v) for v in box)
        side = y2 - y1
        cx = (x1 + x2) / 2
        left = max(0.0, cx - side / 2)
        right = min(float(gray.width), cx + side / 2)
        top, bottom = max(0.0, y1), min(float(gray.height), y2)
        crop = gray.crop((int(left), int(top), int(right), int(bottom)))
        lh, lw = self._lmk_hw
        pixels = np.asarray(crop.resize((lw, lh), Image.Resampling.BILINEAR), np.float32) / 256.0
        out = self._lmk.run(None, {self._lmk.get_inputs()[0].name: pixels[None, None]})[0]
        pts = np.asarray(out, np.float64).reshape(68, 2)
        pts[:, 0] = pts[:, 0] * crop.width + int(left)
        pts[:, 1] = pts[:, 1] * crop.height + int(top)
        return Detection(box=(x1, y1, x2, y2), score=score, landmarks=five_points(pts))


def _face_model(spec: str, kind: str, cache_dir: Path, field_name: str) -> Path:
    from arcface_lab.models.zoo import ZOO_PREFIX, fetch, zoo_entry

    if spec.startswith(ZOO_PREFIX):
        try:
            return fetch(zoo_entry(spec, kind=kind), cache_dir)
        except InputError as exc:
            raise InputError(f"faces.{field_name}: {exc}", argument=field_name) from None
    path = Path(spec)
    if not path.is_file() or path.suffix.lower() != ".onnx":
        raise InputError(
            f"faces.{field_name}: {spec}: expected zoo:<name> or an .onnx file",
            argument=field_name,
        )
    return path


def open_face_finder(faces: FacesParams, cache_dir: Path) -> OnnxFaceFinder:
    """The detector ``faces`` names (zoo entries or .onnx files), fetched and verified."""
    detector = _face_model(faces.detector, "detector", cache_dir, "detector")
    landmarks = _face_model(faces.landmarks, "landmarks", cache_dir, "landmarks")
    return OnnxFaceFinder(
        detector,
        landmarks,
        score_min=faces.score_min,
        nms_iou=faces.nms_iou,
        name=f"{faces.detector} + {faces.landmarks}",
    )


@dataclass(frozen=True)
class FaceRecord:
    """One face found: where, how sure, and its row in the aligned array (None: not aligned)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: list[list[float]]
    index: int | None
    status: str  # "ok" | "too_small"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "status": self.status,
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
        }


@dataclass(frozen=True)
class PhotoRecord:
    """What became of one photo."""

    photo: str
    status: str  # one of PHOTO_STATUSES
    faces: tuple[FaceRecord, ...] = ()
    size: tuple[int, int] | None = None  # height, width
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "photo": self.photo,
            "status": self.status,
            "size": list(self.size) if self.size else None,
            "message": self.message,
            "seconds": round(self.seconds, 4),
            "faces": [f.to_dict() for f in self.faces],
        }


@dataclass
class AlignResult:
    """Aligned crops ``uint8 (N, 112, 112, 3)`` RGB and a record per photo."""

    faces: np.ndarray
    photos: list[PhotoRecord] = field(default_factory=list)
    detector: str = ""
    min_face_px: int = 0

    def index(self) -> list[dict[str, Any]]:
        """One entry per aligned face, in row order: its photo, box, landmarks, score."""
        rows = []
        for p in self.photos:
            for f in p.faces:
                if f.index is not None:
                    rows.append({"photo": p.photo, **f.to_dict()})
        return sorted(rows, key=lambda r: r["index"])

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in PHOTO_STATUSES}
        for p in self.photos:
            c[p.status] += 1
        return c

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "template": "insightface arcface_dst, 112x112",
            "min_face_px": self.min_face_px,
            "faces": int(self.faces.shape[0]),
            "photos": self.counts(),
            "index": self.index(),
            "records": [p.to_dict() for p in self.photos],
        }


def align_photos(
    photos: Sequence[str | Path],
    detector: FaceDetector,
    min_face_px: int,
    read: Callable[[Path], np.ndarray] = read_photo,
) -> AlignResult:
    """Every face of ``photos`` at least ``min_face_px`` on its short side, aligned."""
    crops: list[np.ndarray] = []
    records: list[PhotoRecord] = []
    for spec in photos:
        path = Path(spec)
        t0 = time.perf_counter()
        try:
            photo = read(path)
        except (DataError, OSError) as exc:
            records.append(PhotoRecord(str(path), "unreadable", message=str(exc)))
            continue
        found = detector.detect(photo)
        faces = []
        for det in found:
            if det.short_side < min_face_px:
                faces.append(_record(det, None, "too_small"))
                continue
            try:
                crops.append(align_face(photo, det.landmarks))
            except DataError:
                faces.append(_record(det, None, "too_small"))
                continue
            faces.append(_record(det, len(crops) - 1, "ok"))
        status = (
            "ok"
            if any(f.index is not None for f in faces)
            else ("too_small" if faces else "no_face")
        )
        message = {
            "ok": "",
            "no_face": f"no face scored {getattr(detector, 'score_min', '')} or more".strip(),
            "too_small": f"every face is under {min_face_px} px on its short side",
        }[status]
        records.append(
            PhotoRecord(
                str(path),
                status,
                tuple(faces),
                size=(int(photo.shape[0]), int(photo.shape[1])),
                message=message,
                seconds=time.perf_counter() - t0,
            )
        )
    array = np.stack(crops) if crops else np.zeros((0, *ARCFACE_SIZE, 3), dtype=np.uint8)
    return AlignResult(
        array, records, getattr(detector, "name", type(detector).__name__), min_face_px
    )


def _record(det: Detection, index: int | None, status: str) -> FaceRecord:
    return FaceRecord(
        box=tuple(float(v) for v in det.box),  # type: ignore[arg-type]
        score=det.score,
        landmarks=np.asarray(det.landmarks, dtype=float).tolist(),
        index=index,
        status=status,
    )


#: A data spec of real faces: ``faces:SOURCE[,SOURCE...]``, each source a photo, a folder,
#: ``samples:NAME[/FILE]`` or ``skimage:astronaut``; every face found, aligned.
FACES_PREFIX = "faces:"


def align_spec(spec: str, faces: FacesParams, cache_dir: Path) -> AlignResult:
    """The aligned faces of ``faces:SOURCE,...`` (see :data:`FACES_PREFIX`).

    Raises:
        InputError: a source names nothing, or no face was aligned at all.
    """
    return FaceSpecs(faces, cache_dir).align(spec)


class FaceSpecs:
    """The ``faces:`` specs of one run, resolved together.

    The face finder is opened once, on the first photo, and each photo is found and
    aligned once, however many specs name it (a run's validation faces, held-out faces
    and pairs often come from the same photos). Photos are aligned one by one, so a
    spec's result is the same as :func:`align_photos` over its photos alone.
    """

    def __init__(
        self, faces: FacesParams, cache_dir: Path, finder: FaceDetector | None = None
    ) -> None:
        self.faces, self.cache_dir = faces, cache_dir
        self._finder = finder
        self._photos: dict[str, AlignResult] = {}
        self._specs: dict[str, AlignResult] = {}
        #: Times the face finder was opened (0 or 1) and photos aligned, for the record.
        self.opened, self.aligned = 0, 0

    def align(self, spec: str) -> AlignResult:
        """``spec``'s faces, every photo of it aligned at most once per resolver.

        Raises:
            InputError: a source names nothing, or no face was aligned at all.
        """
        from arcface_lab.data.align import list_photos

        if spec in self._specs:
            return self._specs[spec]
        sources = [s.strip() for s in spec.removeprefix(FACES_PREFIX).split(",") if s.strip()]
        if not sources:
            raise InputError(f"{spec}: expected faces:SOURCE[,SOURCE...]")
        photos = [p for s in sources for p in list_photos(s, self.cache_dir)]
        result = _joined([self._photo(p) for p in photos], self.faces.min_face_px)
        if not len(result.faces):
            raise InputError(f"{spec}: no face aligned in {len(photos)} photo(s)")
        self._specs[spec] = result
        return result

    def _photo(self, path: Path) -> AlignResult:
        key = str(path)
        if key not in self._photos:
            if self._finder is None:
                self._finder = open_face_finder(self.faces, self.cache_dir)
                self.opened += 1
            self._photos[key] = align_photos([path], self._finder, self.faces.min_face_px)
            self.aligned += 1
        return self._photos[key]


def _joined(parts: Sequence[AlignResult], min_face_px: int) -> AlignResult:
    """One result of per-photo results, face rows renumbered in order."""
    crops: list[np.ndarray] = []
    records: list[PhotoRecord] = []
    for part in parts:
        offset = sum(len(c) for c in crops)
        for record in part.photos:
            faces = tuple(
                f if f.index is None else replace(f, index=f.index + offset) for f in record.faces
            )
            records.append(replace(record, faces=faces))
        crops.append(part.faces)
    array = np.concatenate(crops) if crops else np.zeros((0, *ARCFACE_SIZE, 3), dtype=np.uint8)
    detector = parts[0].detector if parts else ""
    return AlignResult(array, records, detector, min_face_px)


def real_pairs(result: AlignResult, shift_px: int, source: str) -> Any:
    """Verification pairs of real faces whose labels are certain.

    Genuine: each face with its mirror image, and with itself shifted by ``shift_px``
    pixels right and down (edges repeated). Impostor: every two faces of one photo (two
    people in one picture). Faces of different photos are never paired: their identities
    are not labelled, and two photos may show one person.
    """
    from arcface_lab.data.pairs import PairSet

    crops = result.faces
    s = int(shift_px)
    shifted = np.pad(crops, ((0, 0), (s, 0), (s, 0), (0, 0)), mode="edge")[:, :112, :112]
    a, b, same = [], [], []
    for i in range(len(crops)):
        a += [crops[i], crops[i]]
        b += [np.ascontiguousarray(crops[i, :, ::-1]), shifted[i]]
        same += [True, True]
    by_photo: dict[str, list[int]] = {}
    for row in result.index():
        by_photo.setdefault(row["photo"], []).append(row["index"])
    for rows in by_photo.values():
        for k, i in enumerate(rows):
            for j in rows[k + 1 :]:
                a.append(crops[i])
                b.append(crops[j])
                same.append(False)
    return PairSet(np.stack(a), np.stack(b), np.array(same, dtype=bool), "real", source)
