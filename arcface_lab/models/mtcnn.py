"""MTCNN: a three-stage cascade face detector giving a box and five landmarks per face.

A clean-room PyTorch re-implementation of Zhang et al.'s MTCNN (arXiv:1604.02878,
``kpzhang93/MTCNN_face_detection_alignment``), written from ``docs/mtcnn-facts.md``:

1. **P-Net** runs fully convolutionally over an image pyramid and proposes 12x12 cells
   (stride 2) scoring at least ``thresholds[0]``; per-scale and cross-scale NMS, box
   regression, then every box made square.
2. **R-Net** scores a 24x24 crop of each proposal (all crops in one batch); the boxes
   scoring more than ``thresholds[1]`` are suppressed, regressed and squared again.
3. **O-Net** scores a 48x48 crop of each (one batch), regresses the box and gives the
   five landmarks (eyes, nose tip, mouth corners, in the ArcFace template's order);
   a final NMS uses the ``Min`` overlap (intersection over the smaller box).

Boxes are truncated to whole pixels before stages 2 and 3, as the original does (MATLAB's
``fix``; Sandberg's port keeps it), so the landmarks are decoded from the box the crop
really starts at: decoded from the unrounded box (facenet-pytorch's way) they sit about
0.4 px right and down. Crops of boxes that stick out of the photo are padded with zeros,
as the original does, so a crop keeps its aspect ratio (a tight 112x112 face crop has its
face box past the border). Pyramid levels and crops are resized with
``interpolate(mode="area")`` and then normalised to ``(x - 127.5) / 128``.

With ``average_views`` each face's landmarks are O-Net's mean over ten views of it
(:meth:`MtcnnFaceFinder._views`): O-Net sees a face at 48x48, so one crop's points move
by a pixel or two when the crop does, and the mean is the steadier estimate. The
workbench turns it on (``faces.mtcnn.average_views``); the original uses one view.

The weights are the three state dicts ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` of the
``facenet-pytorch`` 2.6.0 wheel (MIT, Copyright (c) 2019 Timothy Esler), converted from
davidsandberg/facenet's ``det{1,2,3}.npy`` (MIT), themselves from Zhang et al.'s Caffe
MTCNN. They are read as data only (``torch.load(weights_only=True)``); that package's
code is neither imported nor copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arcface_lab.errors import CheckpointError, DataError, InputError
from arcface_lab.models.detection import Detection, nms

__all__ = [
    "MTCNN_MEAN",
    "MTCNN_SCALE",
    "MtcnnFaceFinder",
    "ONet",
    "PNet",
    "RNet",
    "load_net",
    "load_nets",
    "nms_min",
    "pyramid_scales",
    "square_boxes",
]

#: Pixel normalisation of all three nets: ``(x - MTCNN_MEAN) * MTCNN_SCALE``.
MTCNN_MEAN = 127.5
MTCNN_SCALE = 0.0078125

_CELL, _STRIDE = 12, 2  # P-Net's receptive field and output stride, in input pixels
_NMS_SCALE, _NMS_PYRAMID, _NMS_STAGE2, _NMS_STAGE3 = 0.5, 0.7, 0.7, 0.7


class PNet(nn.Module):
    """Proposal net: fully convolutional, any input of at least 12x12.

    ``forward`` gives the face probability map ``(N, H', W')`` and the box regression
    ``(N, 4, H', W')``, one cell per 12x12 window at stride 2.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement net on 24x24 crops: face probability ``(N,)`` and box regression ``(N, 4)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The Caffe weights flatten in (W, H, C) order (MATLAB's column-major images).
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output net on 48x48 crops: face probability ``(N,)``, box regression ``(N, 4)`` and
    landmarks ``(N, 10)`` as ``[x1..x5, y1..y5]``, fractions of the crop's width and height.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _expected(net: nn.Module) -> str:
    state = net.state_dict()
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    return f"a torch state dict of the MTCNN {type(net).__name__} ({len(state)} tensors: {shapes})"


def _few(keys: list[str], most: int = 4) -> str:
    more = f", ... {len(keys) - most} more" if len(keys) > most else ""
    return f"[{', '.join(keys[:most])}{more}]"


def load_net(net: nn.Module, path: str | Path) -> nn.Module:
    """``net`` with the state dict of ``path`` loaded (strict), in eval mode.

    Raises:
        CheckpointError: no such file, not a file ``torch.load(weights_only=True)`` reads,
            or not ``net``'s keys and shapes. The message names the file and what was
            expected.
    """
    path = Path(path)
    want = net.state_dict()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected {_expected(net)}")
    try:
        state: Any = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle, zip and torch each raise their own types
        raise CheckpointError(
            f"{path}: not readable with torch.load(weights_only=True) "
            f"({type(exc).__name__}); expected {_expected(net)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}; expected {_expected(net)}")
    missing = [k for k in want if k not in state]
    extra = sorted(str(k) for k in set(state) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{path}: missing keys {_few(missing)}, unexpected keys {_few(extra)}; "
            f"expected {_expected(net)}"
        )
    for key, tensor in want.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != tensor.shape:
            found = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(
                f"{path}: {key} is {found}, expected {tuple(tensor.shape)} "
                f"(the file should be {_expected(net)})"
            )
        if not got.is_floating_point() or not torch.isfinite(got).all():
            raise CheckpointError(
                f"{path}: {key} is not finite floating point ({got.dtype}); "
                f"expected {_expected(net)}"
            )
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_nets(pnet: str | Path, rnet: str | Path, onet: str | Path) -> tuple[PNet, RNet, ONet]:
    """The three MTCNN nets with their weights, in eval mode (see :func:`load_net`)."""
    p, r, o = PNet(), RNet(), ONet()
    load_net(p, pnet)
    load_net(r, rnet)
    load_net(o, onet)
    return p, r, o


def pyramid_scales(height: int, width: int, min_size: float, factor: float) -> list[float]:
    """The P-Net scales: ``12 / min_size`` times ``factor ** k`` while the short side
    stays at least 12 pixels (none for a photo too small for ``min_size``).
    """
    scale = _CELL / min_size
    short = min(height, width) * scale
    scales = []
    while short >= _CELL:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def _regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool) -> np.ndarray:
    """``boxes`` moved by ``reg`` (fractions of the width and height, ``+1`` or not)."""
    one = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + one
    h = boxes[:, 3] - boxes[:, 1] + one
    return boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)


def square_boxes(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` (N, 4) made square around their centres, side the longer one (``rerec``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w / 2 - side / 2
    y1 = boxes[:, 1] + h / 2 - side / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def nms_min(boxes: np.ndarray, scores: np.ndarray, overlap_max: float) -> list[int]:
    """Greedy NMS by ``Min`` overlap: intersection over the smaller box, areas with ``+1``.

    Returns the indices kept, best score first; a box overlapping a kept one by more
    than ``overlap_max`` is dropped.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        iw = np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0])
        ih = np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1])
        inter = np.maximum(iw + 1, 0.0) * np.maximum(ih + 1, 0.0)
        overlap = inter / np.maximum(np.minimum(areas[best], areas[rest]), 1e-12)
        order = rest[overlap <= overlap_max]
    return keep


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MTCNN_MEAN) * MTCNN_SCALE


def _crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Normalised ``size`` x ``size`` crops ``(N, 3, size, size)`` of ``image`` (3, H, W).

    Box corners are truncated to integers and taken as 1-based inclusive pixel indices
    (the original's MATLAB convention); the part of a box outside the image is zeros.
    Every box must be at least one pixel wide and high.
    """
    _, height, width = image.shape
    ints = np.trunc(boxes[:, :4]).astype(np.int64) - 1  # 0-based, inclusive
    out = torch.empty((len(ints), 3, size, size), dtype=image.dtype)
    for i, (x1, y1, x2, y2) in enumerate(ints.tolist()):
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
        if (sx1, sy1, sx2, sy2) == (x1, y1, x2, y2):
            crop = image[:, y1 : y2 + 1, x1 : x2 + 1]
        else:
            crop = image.new_zeros((3, y2 - y1 + 1, x2 - x1 + 1))
            if sx2 >= sx1 and sy2 >= sy1:
                crop[:, sy1 - y1 : sy2 - y1 + 1, sx1 - x1 : sx2 - x1 + 1] = image[
                    :, sy1 : sy2 + 1, sx1 : sx2 + 1
                ]
        out[i] = F.interpolate(crop[None], size=(size, size), mode="area")[0]
    return _normalise(out)


#: The views :class:`MtcnnFaceFinder` averages O-Net's landmarks over: shifts of the
#: squared box, in fractions of its side (each also mirrored).
_VIEW_SHIFTS = ((0.0, 0.0), (0.05, 0.0), (-0.05, 0.0), (0.0, 0.05), (0.0, -0.05))
#: A mirrored face's points, in the unmirrored order: the eyes and mouth corners swap.
_MIRROR_ORDER = [1, 0, 2, 4, 3]


def _drop_empty(boxes: np.ndarray) -> np.ndarray:
    """The rows of ``boxes`` whose truncated corners give a crop of at least one pixel."""
    ints = np.trunc(boxes[:, :4])
    return boxes[(ints[:, 2] >= ints[:, 0]) & (ints[:, 3] >= ints[:, 1])]


class MtcnnFaceFinder:
    """Faces and their five landmarks by MTCNN (P-Net, R-Net, O-Net), on the CPU.

    Args:
        pnet: the P-Net state dict (``pnet.pt``); likewise ``rnet`` and ``onet``.
        min_size: the smallest face to look for, in photo pixels; defaults to 20.
        thresholds: the face probability each stage needs; defaults to
            ``(0.6, 0.7, 0.7)``. Stage 1 keeps scores at or above its threshold,
            stages 2 and 3 scores above theirs.
        factor: the scale step of the image pyramid; defaults to 0.709.
        average_views: give each face's landmarks as the mean of O-Net over ten views of
            it (its final box made square, that box shifted by 5 % of its side left,
            right, up and down, and the mirror image of each) instead of the one crop
            the cascade scored. O-Net sees a face at 48x48, so one view's points move by
            a pixel or two with the crop; the mean is steadier. Defaults to False (the
            original's single view).
        name: the detector's name in records; defaults to ``"mtcnn"``.

    Raises:
        CheckpointError: a weights file is missing or not the net it should be.
        InputError: ``min_size``, ``thresholds`` or ``factor`` out of range.
    """

    def __init__(
        self,
        pnet: Path,
        rnet: Path,
        onet: Path,
        *,
        min_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        average_views: bool = False,
        name: str = "mtcnn",
    ) -> None:
        if not min_size >= 1:
            raise InputError(f"min_size: expected at least 1 pixel, got {min_size}", "min_size")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise InputError(
                f"thresholds: expected three probabilities in [0, 1], got {thresholds}",
                "thresholds",
            )
        if not 0.0 < factor < 1.0:
            raise InputError(f"factor: expected a number in (0, 1), got {factor}", "factor")
        self.name = name
        self.min_size = min_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.score_min = self.thresholds[2]
        self.average_views = average_views
        self._pnet, self._rnet, self._onet = load_nets(pnet, rnet, onet)

    def detect(self, photo: np.ndarray) -> list[Detection]:
        """Faces in ``photo`` (``uint8 (H, W, 3)`` RGB), best score first.

        Raises:
            DataError: ``photo`` is not a ``uint8 (H, W, 3)`` array.
        """
        if (
            not isinstance(photo, np.ndarray)
            or photo.ndim != 3
            or photo.shape[2] != 3
            or photo.dtype != np.uint8
        ):
            shape = getattr(photo, "shape", None)
            raise DataError(
                f"photo: expected a uint8 (H, W, 3) RGB array, got {getattr(photo, 'dtype', '')} "
                f"{shape}"
            )
        with torch.inference_mode():
            image = torch.from_numpy(photo.astype(np.float32)).permute(2, 0, 1)
            boxes = self._propose(image)
            if len(boxes):
                boxes = self._refine(image, boxes)
            if not len(boxes):
                return []
            return self._output(image, boxes)

    def _propose(self, image: torch.Tensor) -> np.ndarray:
        """Stage 1: square P-Net boxes ``(N, 4)`` over the whole pyramid."""
        _, height, width = image.shape
        found = []
        for scale in pyramid_scales(height, width, self.min_size, self.factor):
            size = (int(height * scale + 1), int(width * scale + 1))
            level = _normalise(F.interpolate(image[None], size=size, mode="area"))
            prob, reg = self._pnet(level)
            rows, cols = np.nonzero(prob[0].numpy() >= self.thresholds[0])
            if not len(rows):
                continue
            cells = np.stack([cols, rows], axis=1).astype(np.float64)
            corners = np.concatenate(
                [
                    np.floor((_STRIDE * cells + 1) / scale),
                    np.floor((_STRIDE * cells + _CELL) / scale),
                ],
                axis=1,
            )
            rows_found = np.concatenate(
                [
                    corners,
                    prob[0].numpy()[rows, cols, None].astype(np.float64),
                    reg[0].numpy()[:, rows, cols].T.astype(np.float64),
                ],
                axis=1,
            )
            found.append(rows_found[nms(corners, rows_found[:, 4], _NMS_SCALE)])
        if not found:
            return np.zeros((0, 4))
        every = np.concatenate(found)
        every = every[nms(every[:, :4], every[:, 4], _NMS_PYRAMID)]
        squared = square_boxes(_regress(every[:, :4], every[:, 5:9], plus_one=False))
        return _drop_empty(np.trunc(squared))

    def _refine(self, image: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: the R-Net survivors of ``boxes``, suppressed, regressed, squared."""
        prob, reg = self._rnet(_crops(image, boxes, 24))
        score, reg_np = prob.numpy().astype(np.float64), reg.numpy().astype(np.float64)
        hit = score > self.thresholds[1]
        boxes, score, reg_np = boxes[hit], score[hit], reg_np[hit]
        if not len(boxes):
            return boxes
        kept = nms(boxes, score, _NMS_STAGE2)
        return _drop_empty(
            np.trunc(square_boxes(_regress(boxes[kept], reg_np[kept], plus_one=True)))
        )

    def _views(self, image: torch.Tensor, boxes: np.ndarray) -> np.ndarray:
        """Landmarks ``(N, 5, 2)`` of ``boxes``: O-Net's mean over the views of each face
        (:data:`_VIEW_SHIFTS`, each also mirrored), all in one batch.

        A mirrored crop's point ``x`` (a fraction of the box's width) is ``1 - x`` in the
        crop itself (measured: over the face-api faces, a point and its mirror's sum to
        1.0007 of the width on average), and its eyes and mouth corners trade places.
        """
        square = np.trunc(square_boxes(boxes[:, :4]))
        side = (square[:, 2] - square[:, 0])[:, None]
        views = np.concatenate(
            [np.trunc(square + side * np.array([dx, dy, dx, dy])) for dx, dy in _VIEW_SHIFTS]
        )
        crops = _crops(image, views, 48)
        _, _, plain = self._onet(crops)
        _, _, mirrored = self._onet(torch.flip(crops, dims=[3]))
        w = (views[:, 2] - views[:, 0] + 1)[:, None]
        h = (views[:, 3] - views[:, 1] + 1)[:, None]
        found = []
        for marks, flipped in ((plain.numpy(), False), (mirrored.numpy(), True)):
            fx, fy = marks[:, :5].astype(np.float64), marks[:, 5:].astype(np.float64)
            if flipped:
                fx, fy = (1.0 - fx)[:, _MIRROR_ORDER], fy[:, _MIRROR_ORDER]
            found.append(np.stack([w * fx + views[:, :1] - 1, h * fy + views[:, 1:2] - 1], 2))
        every = np.concatenate(found).reshape(2 * len(_VIEW_SHIFTS), len(boxes), 5, 2)
        return every.mean(axis=0)

    def _output(self, image: torch.Tensor, boxes: np.ndarray) -> list[Detection]:
        """Stage 3: O-Net boxes and landmarks, ``Min``-suppressed, best score first."""
        prob, reg, marks = self._onet(_crops(image, boxes, 48))
        score = prob.numpy().astype(np.float64)
        hit = score > self.thresholds[2]
        boxes, score = boxes[hit], score[hit]
        reg_np, marks_np = reg.numpy()[hit].astype(np.float64), marks.numpy()[hit]
        if not len(boxes):
            return []
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = w * marks_np[:, :5] + boxes[:, :1] - 1
        ys = h * marks_np[:, 5:] + boxes[:, 1:2] - 1
        points = np.stack([xs, ys], axis=2)
        final = _regress(boxes, reg_np, plus_one=True)
        kept = nms_min(final, score, _NMS_STAGE3)
        if self.average_views:
            points[kept] = self._views(image, final[kept])
        return [
            Detection(
                box=(
                    float(final[i, 0]),
                    float(final[i, 1]),
                    float(final[i, 2]),
                    float(final[i, 3]),
                ),
                score=float(score[i]),
                landmarks=points[i],
            )
            for i in kept
        ]
