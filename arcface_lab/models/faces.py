"""Finding faces in photos: detect, five landmarks, aligned ArcFace crops, a record per photo.

A :class:`FaceDetector` turns an RGB photo into :class:`Detection`\\ s (box, score, five
landmarks in photo pixels); the detector is pluggable (:func:`open_face_finder` opens the
one a params file's ``faces.detector`` names). The default, MTCNN
(:class:`arcface_lab.models.mtcnn.MtcnnFaceFinder`), finds the five points the ArcFace
template was made of. :class:`OnnxFaceFinder` runs an ONNX box detector and a 68-point
landmark model through ONNX Runtime (``zoo:faceplugin-detect``,
``zoo:faceplugin-landmarks``, from the MIT npm package
``faceplugin-face-recognition-js``), five of its points made from the 68.

:func:`align_photos` runs a detector over photos and warps every face large enough to
the ArcFace 112x112 template (:func:`arcface_lab.data.align.align_face`). A photo that
cannot be read, has no face, or only faces too small is a record saying so
(:data:`PHOTO_STATUSES`), never a failure of the batch.

:func:`realign` measures how steady that is: each aligned crop is found and aligned
again, and its five points should land on the template they were just warped onto.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.config.params import BUILTIN_DETECTORS, FacesParams, RealignParams
from arcface_lab.data.align import (
    ARCFACE_SIZE,
    ARCFACE_TEMPLATE,
    align_face,
    apply_similarity,
    estimate_transform,
    read_photo,
)
from arcface_lab.errors import DataError, InputError
from arcface_lab.models.aligned_store import AlignedStore, NotStored, source_sha256
from arcface_lab.models.detection import Detection, FaceDetector, nms

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
    "Realignment",
    "align_photos",
    "align_spec",
    "aligned_points",
    "alignment_setup",
    "five_points",
    "nms",
    "open_face_finder",
    "real_pairs",
    "realign",
    "refine_landmarks",
]

#: ``ok``: at least one face aligned; ``no_face``: nothing above the score; ``too_small``:
#: faces found, none large enough; ``unsteady``: faces found, none found again on its own
#: aligned crop (``faces.refine_steps``); ``unreadable``: not an image we could decode.
PHOTO_STATUSES = ("ok", "no_face", "too_small", "unsteady", "unreadable")


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


def open_face_finder(faces: FacesParams, cache_dir: Path) -> FaceDetector:
    """The detector ``faces`` names (``mtcnn``, or zoo entries or .onnx files), its
    weights fetched and verified.

    Raises:
        InputError: a model named is not in the zoo or not a file, or cannot be loaded.
    """
    if faces.detector in BUILTIN_DETECTORS:
        from arcface_lab.models.mtcnn import MtcnnFaceFinder
        from arcface_lab.models.zoo import mtcnn_weights

        m = faces.mtcnn
        return MtcnnFaceFinder(
            *mtcnn_weights(cache_dir),
            min_size=m.min_size,
            thresholds=(*m.thresholds, faces.score_min),
            factor=m.factor,
            average_views=m.average_views,
            name="mtcnn",
        )
    if faces.detector.startswith("zoo:mtcnn"):
        raise InputError(
            f"faces.detector: {faces.detector}: one stage of MTCNN; write detector: mtcnn",
            argument="detector",
        )
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
    status: str  # "ok" | "too_small" | "unsteady"

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
    seconds: float = 0.0  # aligning it, when it was aligned
    cached: bool = False  # read from the aligned-photo store, not aligned now

    def to_dict(self) -> dict[str, Any]:
        return {
            "photo": self.photo,
            "status": self.status,
            "size": list(self.size) if self.size else None,
            "message": self.message,
            "seconds": round(self.seconds, 4),
            "cached": self.cached,
            "faces": [f.to_dict() for f in self.faces],
        }

    def exact(self) -> dict[str, Any]:
        """Every field at full precision, for :meth:`from_exact` (the photo's path left out:
        the same bytes may sit at another path)."""
        return {
            "status": self.status,
            "faces": [dataclasses.asdict(f) for f in self.faces],
            "size": list(self.size) if self.size else None,
            "message": self.message,
            "seconds": self.seconds,
        }

    @classmethod
    def from_exact(cls, record: Mapping[str, Any], photo: str, cached: bool) -> PhotoRecord:
        faces = tuple(
            FaceRecord(
                box=tuple(f["box"]),
                score=f["score"],
                landmarks=f["landmarks"],
                index=f["index"],
                status=f["status"],
            )
            for f in record["faces"]
        )
        size = record["size"]
        return cls(
            photo, record["status"], faces, None if size is None else (size[0], size[1]),
            record["message"], record["seconds"], cached,
        )  # fmt: skip


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

    def landmarks(self) -> np.ndarray:
        """``(N, 5, 2)``: each aligned face's five landmarks in its photo, in row order."""
        rows = self.index()
        if not rows:
            return np.zeros((0, 5, 2))
        return np.array([r["landmarks"] for r in rows], dtype=np.float64)

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
    refine_steps: int = 0,
) -> AlignResult:
    """Every face of ``photos`` at least ``min_face_px`` on its short side, aligned.

    With ``refine_steps``, each face's landmarks are refined on its own aligned crop
    first (:func:`refine_landmarks`); a face the detector does not find again there is
    recorded ``unsteady`` and not aligned.
    """
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
            if refine_steps:
                points = refine_landmarks(photo, det.landmarks, detector, refine_steps)
                if points is None:
                    faces.append(_record(det, None, "unsteady"))
                    continue
                det = replace(det, landmarks=points)
            try:
                crops.append(align_face(photo, det.landmarks))
            except DataError:
                faces.append(_record(det, None, "too_small"))
                continue
            faces.append(_record(det, len(crops) - 1, "ok"))
        if any(f.index is not None for f in faces):
            status = "ok"
        elif any(f.status == "too_small" for f in faces):
            status = "too_small"
        else:
            status = "unsteady" if faces else "no_face"
        message = {
            "ok": "",
            "no_face": f"no face scored {getattr(detector, 'score_min', '')} or more".strip(),
            "too_small": f"every face is under {min_face_px} px on its short side",
            "unsteady": "no face was found again on its own aligned crop",
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


#: Refinement stops early once the landmarks move less than this on the crop (pixels).
_REFINED_PX = 0.05


def refine_landmarks(
    photo: np.ndarray, landmarks: np.ndarray, detector: FaceDetector, steps: int
) -> np.ndarray | None:
    """``landmarks`` (five, in ``photo``) refined on the face's own aligned crop.

    Each step aligns the face, finds it again on the crop (the largest face there), and
    maps those points back into the photo through the inverse of the alignment. The
    detector then sees the face upright, at the template's scale and centred, so the
    final crop is (nearly) a fixed point: aligning it again gives it back. None when
    the face is not found again on its own crop (it is then not a face to trust).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    for _ in range(steps):
        matrix = estimate_transform(points)
        found = detector.detect(align_face(photo, points))
        if not found:
            return None
        on_crop = np.asarray(max(found, key=lambda d: d.area).landmarks, dtype=np.float64)
        moved = np.linalg.norm(on_crop - apply_similarity(matrix, points), axis=1)
        points = apply_similarity(np.linalg.inv(matrix), on_crop)
        if moved.mean() < _REFINED_PX:
            break
    return points


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
    """The ``faces:`` specs of one run (or the photos of one command), resolved together.

    The face finder is opened once, on the first photo aligned, and each photo is found
    and aligned once, however many specs name it (a run's validation faces, held-out faces
    and pairs often come from the same photos). Photos are aligned one by one, so a
    spec's result is the same as :func:`align_photos` over its photos alone.

    With ``store`` (the default when the finder is the one ``faces`` names), each photo's
    result is kept in the aligned-photo store under ``cache_dir``
    (:class:`~arcface_lab.models.aligned_store.AlignedStore`): the next run, test or
    notebook that names the same photo with the same settings reads it instead of
    aligning it again, and its record says ``cached``. A finder given here is not one
    the store can name, so it is never stored for.
    """

    def __init__(
        self,
        faces: FacesParams,
        cache_dir: Path,
        finder: FaceDetector | None = None,
        store: bool | None = None,
    ) -> None:
        self.faces, self.cache_dir = faces, Path(cache_dir)
        self._finder = finder
        self._use_store = finder is None if store is None else store
        self._store: AlignedStore | None = None
        self._photos: dict[str, AlignResult] = {}
        self._specs: dict[str, AlignResult] = {}
        #: Times the face finder was opened (0 or 1) and photos resolved, for the record.
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
        result = self.photos(photos)
        if not len(result.faces):
            raise InputError(f"{spec}: no face aligned in {len(photos)} photo(s)")
        self._specs[spec] = result
        return result

    def photos(self, paths: Sequence[str | Path]) -> AlignResult:
        """Every face of ``paths``, each photo aligned at most once per resolver; a photo
        with no face aligned is a record saying why, as in :func:`align_photos`."""
        return _joined([self._photo(Path(p)) for p in paths], self.faces.min_face_px)

    @property
    def finder(self) -> FaceDetector:
        """The face finder, opened on first use."""
        if self._finder is None:
            self._finder = open_face_finder(self.faces, self.cache_dir)
            self.opened += 1
        return self._finder

    @property
    def store(self) -> AlignedStore | None:
        """The aligned-photo store (None when not used), set up on first use."""
        if self._use_store and self._store is None:
            self._store = AlignedStore(
                self.cache_dir / "aligned", alignment_setup(self.faces, self.cache_dir)
            )
        return self._store

    def everything(self) -> AlignResult:
        """Every photo aligned so far, once each, in the order they were first aligned."""
        return _joined(list(self._photos.values()), self.faces.min_face_px)

    def _photo(self, path: Path) -> AlignResult:
        key = str(path)
        if key not in self._photos:
            self._photos[key] = self._align(path)
            self.aligned += 1
        return self._photos[key]

    def _align(self, path: Path) -> AlignResult:
        def align() -> AlignResult:
            return align_photos(
                [path], self.finder, self.faces.min_face_px, refine_steps=self.faces.refine_steps
            )

        store = self.store
        if store is None:
            return align()

        def make() -> tuple[np.ndarray, dict[str, Any]]:
            result = align()
            [record] = result.photos
            made = {"detector": result.detector, "photo": record.exact()}
            if record.status == "unreadable":  # its message names this path
                raise NotStored(result.faces, made)
            return result.faces, made

        crops, made, hit = store.get(path, make)
        record = PhotoRecord.from_exact(made["photo"], str(path), cached=hit)
        return AlignResult(crops, [record], made["detector"], self.faces.min_face_px)


def alignment_setup(faces: FacesParams, cache_dir: Path) -> dict[str, Any]:
    """Everything but the photo that aligning one depends on, for the aligned-photo store:
    the detector's settings and weights (their sha256), the alignment settings, the code's
    source, the library versions and the hardware class (float32 rounding)."""
    from importlib.metadata import version

    from arcface_lab.core.files import file_sha256
    from arcface_lab.core.host import probe

    here = Path(__file__).resolve().parent
    sources = [here / "faces.py", here / "detection.py", here / "aligned_store.py"]
    sources.append(here.parent / "data" / "align.py")
    if faces.detector in BUILTIN_DETECTORS:
        import torch

        from arcface_lab.models.zoo import mtcnn_weights

        weights = list(mtcnn_weights(cache_dir))
        detector: dict[str, Any] = {
            "name": faces.detector,
            "mtcnn": dataclasses.asdict(faces.mtcnn),
            "score_min": faces.score_min,
        }
        runtime = {"torch": torch.__version__}
        sources.append(here / "mtcnn.py")
    else:
        import onnxruntime

        weights = [
            _face_model(faces.detector, "detector", cache_dir, "detector"),
            _face_model(faces.landmarks, "landmarks", cache_dir, "landmarks"),
        ]
        detector = {
            "name": faces.detector,
            "landmarks": faces.landmarks,
            "score_min": faces.score_min,
            "nms_iou": faces.nms_iou,
        }
        runtime = {"onnxruntime": onnxruntime.__version__}
    cpu = probe().cpu
    return {
        "detector": detector,
        "weights": [file_sha256(w) for w in weights],
        "min_face_px": faces.min_face_px,
        "refine_steps": faces.refine_steps,
        "code": source_sha256(sources),
        "libraries": {
            **runtime,
            **{name: version(name) for name in ("numpy", "scikit-image", "pillow")},
        },
        "hardware": {"class": cpu.cls, "isa_cap": cpu.isa_cap},
    }


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


@dataclass
class Realignment:
    """Aligned crops aligned again (:func:`realign`).

    ``error_px[i]``: the mean distance, in pixels of the 112x112 crop, from the five
    landmarks found on crop ``i`` to where its first alignment put them (NaN where no
    face was found: a lost crop); ``point_px`` the five distances; ``fit_px`` how far the
    first alignment's points are from the template itself (a similarity cannot put five
    points of a real face exactly on it: the alignment's least-squares residual, not
    drift); ``crops`` the crops aligned again (black where lost); ``lost`` the rows lost;
    ``against`` what the points were measured against.
    """

    error_px: np.ndarray
    point_px: np.ndarray
    fit_px: np.ndarray
    crops: np.ndarray
    lost: list[int]
    detector: str
    against: str

    def summary(self, targets: RealignParams, cosine: np.ndarray | None = None) -> dict[str, Any]:
        """The figures and whether they meet ``targets``; ``cosine``: each kept crop's
        embedding against its first alignment's (rows not lost, in order), when measured.
        """
        found = self.error_px[np.isfinite(self.error_px)]
        px_median = float(np.median(found)) if found.size else None
        px_max = float(found.max()) if found.size else None
        misses = []
        if self.lost:
            misses.append(f"{len(self.lost)} crop(s) lost")
        if px_median is not None and px_median > targets.px_median:
            misses.append(f"median {px_median:.2f} px > {targets.px_median:g}")
        if px_max is not None and px_max > targets.px_max:
            misses.append(f"max {px_max:.2f} px > {targets.px_max:g}")
        cos: dict[str, float | None] = {"cosine_median": None, "cosine_min": None}
        if cosine is not None and len(cosine):
            low = float(cosine.min())
            cos = {"cosine_median": float(np.median(cosine)), "cosine_min": low}
            if low < targets.cosine_min:
                misses.append(f"cosine min {low:.4f} < {targets.cosine_min:g}")
        point_max = float(np.nanmax(self.point_px)) if found.size else None
        fit = self.fit_px[np.isfinite(self.fit_px)]
        return {
            "detector": self.detector,
            "against": self.against,
            "faces": len(self.error_px),
            "lost": len(self.lost),
            "lost_rows": list(self.lost),
            "px_median": px_median,
            "px_max": px_max,
            "point_px_max": point_max,
            "fit_px_median": float(np.median(fit)) if fit.size else None,
            **cos,
            "targets": {
                "px_median": targets.px_median,
                "px_max": targets.px_max,
                "cosine_min": targets.cosine_min,
                "lost": 0,
            },
            "passed": not misses and found.size > 0,
            "misses": misses,
            "per_face": [
                {
                    "row": i,
                    "error_px": None if not np.isfinite(e) else round(float(e), 3),
                    "point_px": (None if not np.isfinite(e) else [round(float(v), 3) for v in p]),
                }
                for i, (e, p) in enumerate(zip(self.error_px, self.point_px, strict=True))
            ],
        }


def aligned_points(landmarks: np.ndarray) -> np.ndarray:
    """Where alignment puts each face's five ``landmarks`` ``(N, 5, 2)`` in its crop."""
    out = np.empty((len(landmarks), 5, 2))
    for i, points in enumerate(np.asarray(landmarks, dtype=np.float64)):
        out[i] = apply_similarity(estimate_transform(points), points)
    return out


def realign(
    crops: np.ndarray, detector: FaceDetector, landmarks: np.ndarray | None = None
) -> Realignment:
    """Find the face of each aligned crop again and measure where its five points land.

    The found points are compared with where the first alignment put the face's points
    (from ``landmarks``, each face's five points in its photo, ``(N, 5, 2)``; without
    them, with the template): the distance is the detector's own noise, which every
    embedding of the face inherits. The largest face found on a crop is its face (a crop
    may show the edge of a neighbour); a crop where no face is found is lost.

    Raises:
        InputError: ``crops`` are not aligned crops, or ``landmarks`` not one per crop.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (*ARCFACE_SIZE, 3) or crops.dtype != np.uint8:
        raise InputError(
            f"aligned crops: expected uint8 (N, {ARCFACE_SIZE[0]}, {ARCFACE_SIZE[1]}, 3), "
            f"got {crops.dtype} {crops.shape}"
        )
    n = len(crops)
    if landmarks is None:
        expected = np.broadcast_to(ARCFACE_TEMPLATE, (n, 5, 2))
        against = "the template"
    else:
        if np.shape(landmarks) != (n, 5, 2):
            raise InputError(
                f"landmarks: expected ({n}, 5, 2), one set per crop; got {np.shape(landmarks)}"
            )
        expected = aligned_points(landmarks)
        against = "the points the first alignment placed"
    fit_px = np.linalg.norm(expected - ARCFACE_TEMPLATE, axis=2).mean(axis=1)
    point_px = np.full((n, 5), np.nan)
    again = np.zeros_like(crops)
    lost: list[int] = []
    for i, crop in enumerate(crops):
        found = detector.detect(crop)
        if not found:
            lost.append(i)
            continue
        face = max(found, key=lambda d: d.area)
        try:
            again[i] = align_face(crop, face.landmarks)
        except DataError:
            lost.append(i)
            continue
        point_px[i] = np.linalg.norm(np.asarray(face.landmarks) - expected[i], axis=1)
    error_px = point_px.mean(axis=1)
    name = getattr(detector, "name", type(detector).__name__)
    return Realignment(error_px, point_px, fit_px, again, lost, name, against)
