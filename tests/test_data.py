"""Loading face crops and preprocessing them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arcface_lab.core.preprocess import Preprocess
from arcface_lab.data.images import load_images, synthetic_faces
from arcface_lab.errors import DataError


def test_default_is_insightface_normalization() -> None:
    img = np.zeros((1, 112, 112, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 0, 255, 127
    x = Preprocess()(img)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[0, :, 0, 0], [-1.0, 1.0, (127 - 127.5) / 127.5], rtol=1e-6)


def test_bgr_nhwc_and_other_normalizations() -> None:
    img = np.zeros((2, 112, 112, 3), np.uint8)
    img[..., 0] = 200
    x = Preprocess(mean=127.5, std=128.0, bgr=True, layout="NHWC")(img)
    assert x.shape == (2, 112, 112, 3)
    np.testing.assert_allclose(x[0, 0, 0], [-127.5 / 128, -127.5 / 128, 72.5 / 128], rtol=1e-6)


def test_preprocess_validates_its_fields() -> None:
    with pytest.raises(DataError, match="preprocess.layout: expected 'NCHW' or 'NHWC', got 'CHW'"):
        Preprocess(layout="CHW")
    with pytest.raises(DataError, match="preprocess.std: expected a positive number"):
        Preprocess(std=0)


def test_npy_round_trip_and_errors(tmp_path: Path) -> None:
    faces = synthetic_faces(3)
    np.save(tmp_path / "ok.npy", faces)
    np.testing.assert_array_equal(load_images(tmp_path / "ok.npy"), faces)
    np.save(tmp_path / "f32.npy", faces.astype(np.float32))
    with pytest.raises(DataError, match="f32.npy: expected dtype uint8"):
        load_images(tmp_path / "f32.npy")
    np.save(tmp_path / "small.npy", faces[:, :64, :64])
    with pytest.raises(
        DataError, match="small.npy: expected 112x112 aligned face crops, got 64x64"
    ):
        load_images(tmp_path / "small.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy: not a readable .npy array"):
        load_images(tmp_path / "obj.npy")


def test_folder_of_images(tmp_path: Path) -> None:
    faces = synthetic_faces(3)
    for i, face in enumerate(faces):
        Image.fromarray(face).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    np.testing.assert_array_equal(load_images(tmp_path), faces)
    (tmp_path / "03.jpg").write_bytes(b"\xff\xd8 broken jpeg")
    with pytest.raises(DataError, match="03.jpg: not a readable image"):
        load_images(tmp_path)


def test_wrong_size_image_and_missing_paths(tmp_path: Path) -> None:
    Image.new("RGB", (120, 100)).save(tmp_path / "big.png")
    with pytest.raises(
        DataError, match="big.png: expected a 112x112 aligned face crop, got 100x120"
    ):
        load_images(tmp_path / "big.png")
    with pytest.raises(DataError, match="nowhere: no such file or folder"):
        load_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no image files"):
        load_images(tmp_path / "empty")


def test_synthetic_faces_are_deterministic_and_identity_structured() -> None:
    a = synthetic_faces(4, seed=1, identities=[0, 0, 1, 1])
    np.testing.assert_array_equal(a, synthetic_faces(4, seed=1, identities=[0, 0, 1, 1]))
    same = np.abs(a[0].astype(int) - a[1]).mean()
    different = np.abs(a[0].astype(int) - a[2]).mean()
    assert same < different


def test_images_from_spec(tmp_path: Path) -> None:
    from arcface_lab.data.images import images_from_spec

    images, kind = images_from_spec("synthetic:3", seed=1)
    assert kind == "synthetic" and images.shape == (3, 112, 112, 3)
    np.testing.assert_array_equal(images, synthetic_faces(3, seed=1))
    assert images_from_spec("synthetic")[0].shape[0] == 64
    np.save(tmp_path / "f.npy", images)
    assert images_from_spec(str(tmp_path / "f.npy"))[1] == "files"
    with pytest.raises(
        DataError, match=r"images 'synthetic:x': expected 'synthetic' or 'synthetic:N'"
    ):
        images_from_spec("synthetic:x")
    with pytest.raises(DataError, match=r"images 'synthetic:0'"):
        images_from_spec("synthetic:0")


def test_preprocess_round_trips_through_json() -> None:
    import json

    pre = Preprocess(mean=127.5, std=128.0, bgr=True, layout="NHWC", size=(112, 96))
    assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data worth decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_empty_npy_and_decompression_bomb_are_data_errors_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npy: not a readable \.npy array"):
        load_images(empty)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(30000, 30000))
    with pytest.raises(DataError, match=r"bomb\.png: not decoded, too many pixels"):
        load_images(bomb)
    big = tmp_path / "big.png"
    big.write_bytes(_png_header_only(4000, 3000))  # judged by its header, never decoded
    with pytest.raises(
        DataError, match=r"big\.png: expected a 112x112 aligned face crop, got 3000x4000"
    ):
        load_images(big)
