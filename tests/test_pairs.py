"""Tests for arcface_lab.data.pairs: safe insightface .bin loading, CSV pairs, synthetic pairs."""

from __future__ import annotations

import codecs
import io
import os
import pickle
import pickletools
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from arcface_lab.data.images import decode_image, synthetic_faces
from arcface_lab.data.pairs import PairSet, load_bin, load_csv, load_pairs, synthetic_pairs
from arcface_lab.errors import DataError, UnsafeFileError

SIZE = (112, 112)

# ----------------------------------------------------------------------------- helpers


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
    else:
        Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return synthetic_faces(6, seed=3, size=SIZE)


@pytest.fixture(scope="module")
def blobs(faces: np.ndarray) -> list[bytes]:
    """Three pairs, PNG and JPEG mixed."""
    fmts = ["PNG", "JPEG", "PNG", "PNG", "JPEG", "JPEG"]
    return [encode(img, fmt) for img, fmt in zip(faces, fmts, strict=True)]


LABELS = [True, False, True]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_loaded(pairs: PairSet, blobs: list[bytes], faces: np.ndarray) -> None:
    assert pairs.kind == "bin"
    assert pairs.n_pairs == 3
    assert pairs.same.dtype == np.bool_ and pairs.same.tolist() == LABELS
    assert pairs.images_a.shape == (3, *SIZE, 3) and pairs.images_a.dtype == np.uint8
    for i in range(6):
        got = (pairs.images_a if i % 2 == 0 else pairs.images_b)[i // 2]
        assert np.array_equal(got, decode_image(blobs[i], "expected"))
        if blobs[i].startswith(b"\x89PNG"):
            assert np.array_equal(got, faces[i])  # lossless: exactly the original
        else:
            assert np.abs(got.astype(int) - faces[i]).mean() < 10


def py2_pickle(images: list[bytes], labels: list[bool], protocol: int) -> bytes:
    """What Python 2's pickle writes for ``(images, labels)`` with ``str`` images, by opcode."""
    out = bytearray()
    memo = 0

    def put() -> None:
        nonlocal memo
        if protocol == 0:
            out.extend(pickle.PUT + str(memo).encode() + b"\n")
        else:
            out.extend(pickle.BINPUT + bytes([memo]))
        memo += 1

    def string(data: bytes) -> None:
        if protocol == 0:  # repr of a py2 str: same quoting and escapes as py3 bytes repr
            out.extend(pickle.STRING + repr(data)[1:].encode("ascii") + b"\n")
        elif len(data) < 256:
            out.extend(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            out.extend(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        put()

    def boolean(value: bool) -> None:
        if protocol == 2:
            out.extend(pickle.NEWTRUE if value else pickle.NEWFALSE)
        else:
            out.extend(pickle.INT + (b"01" if value else b"00") + b"\n")

    def py_list(items: Sequence[Any], emit: Callable[[Any], None]) -> None:
        if protocol == 0:
            out.extend(pickle.MARK + pickle.LIST)
            put()
            for item in items:
                emit(item)
                out.extend(pickle.APPEND)
        else:
            out.extend(pickle.EMPTY_LIST)
            put()
            out.extend(pickle.MARK)
            for item in items:
                emit(item)
            out.extend(pickle.APPENDS)

    if protocol == 2:
        out.extend(pickle.PROTO + b"\x02")
    else:
        out.extend(pickle.MARK)
    py_list(images, string)
    py_list(labels, boolean)
    out.extend(pickle.TUPLE2 if protocol == 2 else pickle.TUPLE)
    put()
    out.extend(pickle.STOP)
    return bytes(out)


def opcodes(data: bytes, protocol: int) -> set[str]:
    """Opcode names in a pickle.

    ``pickletools`` decodes protocol-0 ``STRING`` arguments as ASCII and fails on
    image bytes, so protocol 0 is scanned by hand: its opcodes are the bytes after
    a newline (escaped string content never holds a raw newline).
    """
    if protocol > 0:
        return {op.name for op, _, _ in pickletools.genops(data)}
    names = {
        "S": "STRING",
        "c": "GLOBAL",
        "V": "UNICODE",
        "R": "REDUCE",
        "a": "APPEND",
        "I": "INT",
        "t": "TUPLE",
    }
    starts = [data[:1]] + [data[i + 1 : i + 2] for i in range(len(data)) if data[i] == 10]
    return {names[c.decode()] for c in starts if c and c.decode("latin1") in names}


# ----------------------------------------------------------------------------- .bin round trips


@pytest.mark.parametrize("protocol", range(6))
def test_bin_round_trip_python3_every_protocol(
    tmp_path: Path, blobs: list[bytes], faces: np.ndarray, protocol: int
) -> None:
    path = write(tmp_path / "lfw.bin", pickle.dumps((blobs, LABELS), protocol=protocol))
    pairs = load_bin(path)
    assert_loaded(pairs, blobs, faces)
    assert pairs.source == str(path)


def test_bin_round_trip_python3_list_and_int_labels(
    tmp_path: Path, blobs: list[bytes], faces: np.ndarray
) -> None:
    data = pickle.dumps([blobs, [1, 0, 1]], protocol=2)
    assert_loaded(load_bin(write(tmp_path / "x.bin", data)), blobs, faces)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_bin_round_trip_python2_file(
    tmp_path: Path, blobs: list[bytes], faces: np.ndarray, protocol: int
) -> None:
    data = py2_pickle(blobs, LABELS, protocol)
    ops = opcodes(data, protocol)
    assert not ops & {"BINBYTES", "SHORT_BINBYTES", "BINUNICODE", "UNICODE", "GLOBAL", "REDUCE"}
    assert ("STRING" if protocol == 0 else "BINSTRING") in ops
    assert pickle.loads(data, encoding="bytes") == (blobs, LABELS)  # well-formed pickle
    assert_loaded(load_bin(write(tmp_path / "agedb_30.bin", data)), blobs, faces)


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_bin_python2_short_strings(tmp_path: Path, protocol: int) -> None:
    imgs = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    small = [encode(img, "PNG") for img in imgs]
    assert all(len(b) < 256 for b in small)
    data = py2_pickle(small, [False, True], protocol)
    assert ("STRING" if protocol == 0 else "SHORT_BINSTRING") in opcodes(data, protocol)
    pairs = load_bin(write(tmp_path / "small.bin", data), image_size=(8, 8))
    assert pairs.same.tolist() == [False, True]
    assert np.array_equal(pairs.images_b[1], imgs[3])


# ----------------------------------------------------------------------------- malicious .bin


class _Reduce:
    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _payloads(target: Path) -> list[tuple[str, object, list[int]]]:
    return [
        ("posix.system", _Reduce(os.system, (f"touch {target}",)), list(range(6))),
        ("open", _Reduce(open, (str(target), "w")), list(range(6))),
        ("pathlib", _Reduce(Path.touch, (target,)), [4, 5]),
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_bin_refuses_code_and_never_runs_it(tmp_path: Path, blobs: list[bytes], which: int) -> None:
    target = tmp_path / "pwned"
    name, payload, protocols = _payloads(target)[which]
    for protocol in protocols:
        for obj in [payload, (blobs, LABELS, payload), ([payload, *blobs[1:]], LABELS)]:
            path = write(tmp_path / "evil.bin", pickle.dumps(obj, protocol=protocol))
            with pytest.raises(UnsafeFileError) as err:
                load_bin(path)
            msg = str(err.value)
            assert msg.startswith(f"{path}: refusing to unpickle the global "), msg
            assert name in msg
            assert not target.exists()


def test_bin_refuses_numpy_labels(tmp_path: Path, blobs: list[bytes]) -> None:
    data = pickle.dumps((blobs, [np.bool_(True), np.bool_(False), np.bool_(True)]), protocol=2)
    path = write(tmp_path / "np.bin", data)
    with pytest.raises(UnsafeFileError, match=r"np\.bin: refusing to unpickle the global numpy"):
        load_bin(path)


def test_bin_allowed_global_cannot_be_misused(tmp_path: Path, blobs: list[bytes]) -> None:
    data = pickle.dumps(([_Reduce(codecs.encode, ("abc", "rot13")), *blobs[1:]], LABELS), 2)
    assert b"_codecs\nencode" in data
    path = write(tmp_path / "rot.bin", data)
    with pytest.raises(
        DataError, match=r"rot\.bin: not a complete insightface \.bin pickle.*rot13"
    ):
        load_bin(path)


# ----------------------------------------------------------------------------- broken .bin


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_bin_truncated_is_a_data_error(tmp_path: Path, blobs: list[bytes], protocol: int) -> None:
    data = pickle.dumps((blobs, LABELS), protocol=protocol)
    for cut in [1, 2, 10, len(data) // 3, len(data) // 2, len(data) - 2, len(data) - 1]:
        path = write(tmp_path / "cut.bin", data[:cut])
        with pytest.raises(DataError) as err:
            load_bin(path)
        assert str(err.value).startswith(f"{path}: not a complete insightface .bin pickle"), cut


def test_bin_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.bin", b"")
    with pytest.raises(DataError, match=r"empty\.bin: not a complete insightface \.bin pickle"):
        load_bin(path)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda b: (b, LABELS, None),
            r"expected a pickled pair \(images, issame\), got a tuple of 3",
        ),
        (lambda b: {"images": b}, r"expected a pickled pair \(images, issame\), got a dict"),
        (lambda b: (b"x", LABELS), r"expected a list of encoded images first, got a bytes"),
        (lambda b: (b, "TFT"), r"expected a list of bool labels second, got a str"),
        (lambda b: (b[:5], LABELS), r"expected an even number of images \(two per pair\), got 5"),
        (lambda b: (b[:4], LABELS), r"expected 2 images per label \(2 x 3 = 6\), got 4 images"),
        (lambda b: ([], []), r"expected at least one pair, got no labels"),
        (lambda b: (b, [True, "yes", False]), r"label 1: expected a bool \(or 0/1\), got 'yes'"),
        (lambda b: (b, [True, False, 2]), r"label 2: expected a bool \(or 0/1\), got 2"),
        (lambda b: (b, [True, 1.0, 0]), r"label 1: expected a bool \(or 0/1\), got 1.0"),
        (
            lambda b: ([*b[:3], b"GIF89a.....", *b[4:]], LABELS),
            r"image 3: expected JPEG or PNG bytes, got a header of b'GIF89a",
        ),
        (lambda b: ([*b[:5], "text"], LABELS), r"image 5: expected encoded image bytes, got a str"),
        (
            lambda b: ([*b[:2], b"\xff\xd8 not really a jpeg", *b[3:]], LABELS),
            r"image 2: not a readable image",
        ),
    ],
)
def test_bin_wrong_structure(
    tmp_path: Path, blobs: list[bytes], build: Callable[[list[bytes]], object], message: str
) -> None:
    path = write(tmp_path / "bad.bin", pickle.dumps(build(blobs), protocol=4))
    with pytest.raises(DataError) as err:
        load_bin(path)
    assert str(err.value).startswith(f"{path}: ")
    assert err.match(message)


def test_bin_wrong_image_size(tmp_path: Path, blobs: list[bytes]) -> None:
    path = write(tmp_path / "lfw.bin", pickle.dumps((blobs, LABELS), protocol=4))
    with pytest.raises(DataError, match=r"lfw\.bin: image 0: expected a 96x96 aligned face crop"):
        load_bin(path, image_size=(96, 96))


def test_bin_size_cap_checked_before_reading(
    tmp_path: Path, blobs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pickle.dumps((blobs, LABELS), protocol=4)
    path = write(tmp_path / "big.bin", data)

    def no_read(self: Path) -> bytes:
        raise AssertionError(f"{self} was read despite the size cap")

    monkeypatch.setattr(Path, "read_bytes", no_read)
    with pytest.raises(DataError) as err:
        load_bin(path, max_bytes=1000)
    assert str(err.value) == f"{path}: {len(data)} bytes is over the 1000-byte cap for .bin files"


def test_bin_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.bin: no such \.bin file"):
        load_bin(tmp_path / "nope.bin")


# ----------------------------------------------------------------------------- csv


@pytest.fixture()
def csv_dir(tmp_path: Path, faces: np.ndarray) -> Path:
    (tmp_path / "imgs").mkdir()
    for i, img in enumerate(faces[:4]):
        Image.fromarray(img).save(tmp_path / "imgs" / f"{i}.png")
    Image.fromarray(faces[4][:50]).save(tmp_path / "imgs" / "small.png")
    return tmp_path


def write_csv(folder: Path, text: str) -> Path:
    path = folder / "pairs.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_good(csv_dir: Path, faces: np.ndarray) -> None:
    text = (
        "path_a,path_b,same\n"
        "imgs/0.png,imgs/1.png,1\n"
        "\n"
        "imgs/2.png, imgs/3.png ,FALSE\n"
        "./imgs/0.png,imgs/sub/../2.png,true\n"
        "imgs/1.png,imgs/3.png,0\n"
    )
    pairs = load_csv(write_csv(csv_dir, text), SIZE)
    assert pairs.kind == "csv" and pairs.n_pairs == 4
    assert pairs.same.tolist() == [True, False, True, False]
    assert np.array_equal(pairs.images_a, faces[[0, 2, 0, 1]])
    assert np.array_equal(pairs.images_b, faces[[1, 3, 2, 3]])


HEAD = "path_a,path_b,same\n"
OUTSIDE = "is outside the CSV's folder"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("a,b,c\nimgs/0.png,imgs/1.png,1\n", DataError, r"line 1: expected the header 'path_a,"),
        (
            HEAD + "imgs/0.png,imgs/1.png,1\nimgs/0.png,imgs/1.png,yes\n",
            DataError,
            r"line 3: same: expected 0, 1, true or false, got 'yes'",
        ),
        (HEAD + "imgs/0.png,imgs/9.png,1\n", DataError, r"line 2: cannot read .*9\.png"),
        (
            HEAD + "imgs/0.png,imgs/1.png\n",
            DataError,
            r"line 2: expected 3 fields \(path_a,path_b,same\), got 2",
        ),
        (
            HEAD + "imgs/0.png,,1\n",
            DataError,
            r"line 2: expected an image path, got an empty field",
        ),
        (
            HEAD + "imgs/0.png,imgs/small.png,1\n",
            DataError,
            r"line 2: imgs/small\.png: expected a 112x112 aligned face crop, got 50x112",
        ),
        (
            HEAD + "../outside.png,imgs/1.png,1\n",
            UnsafeFileError,
            r"line 2: '\.\./outside\.png' " + OUTSIDE,
        ),
        (
            HEAD + "imgs/0.png,imgs/../../x.png,0\n",
            UnsafeFileError,
            r"line 2: 'imgs/\.\./\.\./x\.png' " + OUTSIDE,
        ),
        (
            HEAD + "/etc/hostname,imgs/1.png,1\n",
            UnsafeFileError,
            r"line 2: '/etc/hostname' " + OUTSIDE,
        ),
        (HEAD + "\n", DataError, r"expected at least one pair after the header, got none"),
        ("", DataError, r"empty file; expected the header 'path_a,path_b,same'"),
    ],
)
def test_csv_bad(csv_dir: Path, text: str, error: type[Exception], message: str) -> None:
    path = write_csv(csv_dir, text)
    with pytest.raises(error) as err:
        load_csv(path, SIZE)
    assert str(err.value).startswith(f"{path}: ")
    assert err.match(message)


@pytest.mark.parametrize("link", ["imgs/link.png", "linked/0.png"])
def test_csv_link_out_of_its_folder_is_refused(
    tmp_path: Path, faces: np.ndarray, link: str
) -> None:
    """A symlink (to a file or a folder) that leads out of the CSV's folder is not followed."""
    outside, folder = tmp_path / "outside", tmp_path / "pairs"
    outside.mkdir()
    (folder / "imgs").mkdir(parents=True)
    Image.fromarray(faces[0]).save(outside / "0.png")
    Image.fromarray(faces[1]).save(folder / "imgs" / "1.png")
    (folder / "imgs" / "link.png").symlink_to(outside / "0.png")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "imgs" / "inside.png").symlink_to(folder / "imgs" / "1.png")
    path = write_csv(folder, f"{HEAD}imgs/inside.png,imgs/1.png,1\n{link},imgs/1.png,0\n")
    with pytest.raises(UnsafeFileError) as err:
        load_csv(path, SIZE)
    assert str(err.value) == (
        f"{path}: line 3: {link!r} is a link to {(outside / '0.png').resolve()}, outside the "
        f"CSV's folder {folder.resolve()}; expected images inside it (copy them in instead of "
        "linking)"
    )
    write_csv(folder, f"{HEAD}imgs/inside.png,imgs/1.png,1\n")
    assert load_csv(path, SIZE).n_pairs == 1  # a link that stays inside is fine


def test_csv_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"none\.csv: no such \.csv file"):
        load_csv(tmp_path / "none.csv", SIZE)


# ------------------------------------------------------------------------- synthetic, load_pairs


def test_synthetic_pairs_deterministic_and_labelled() -> None:
    first = synthetic_pairs(10, seed=1)
    again = synthetic_pairs(10, seed=1)
    other = synthetic_pairs(10, seed=2)
    assert first.kind == "synthetic" and "synthetic" in first.source
    assert first.n_pairs == 10 and first.images_a.shape == (10, *SIZE, 3)
    assert first.same.tolist() == [True, False] * 5  # interleaved, same first
    assert np.array_equal(first.images_a, again.images_a)
    assert np.array_equal(first.images_b, again.images_b)
    assert not np.array_equal(first.images_a, other.images_a)
    diff = np.abs(first.images_a.astype(int) - first.images_b.astype(int)).mean(axis=(1, 2, 3))
    assert (diff > 0).all()  # a same pair is two variants, not one image twice
    assert diff[first.same].max() < diff[~first.same].min()


def test_synthetic_pairs_refuses_zero() -> None:
    with pytest.raises(DataError, match=r"synthetic_pairs: expected n_pairs >= 1, got 0"):
        synthetic_pairs(0)


def test_load_pairs_dispatch(tmp_path: Path, blobs: list[bytes], csv_dir: Path) -> None:
    assert load_pairs("synthetic").n_pairs == 200
    small = load_pairs("synthetic:6", image_size=(32, 32))
    assert small.n_pairs == 6 and small.images_a.shape[1:3] == (32, 32)
    bin_path = write(tmp_path / "cfp_fp.bin", pickle.dumps((blobs, LABELS), protocol=2))
    assert load_pairs(str(bin_path)).kind == "bin"
    csv_path = write_csv(csv_dir, "path_a,path_b,same\nimgs/0.png,imgs/1.png,1\n")
    assert load_pairs(csv_path).kind == "csv"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:0", r"pairs 'synthetic:0': expected 'synthetic' or 'synthetic:N' with N a pos"),
        ("synthetic:ten", r"pairs 'synthetic:ten': expected 'synthetic' or 'synthetic:N'"),
        ("pairs.txt", r"pairs 'pairs\.txt': expected an insightface \.bin, a \.csv"),
        ("missing.bin", r"missing\.bin: no such pair file"),
        ("missing.csv", r"missing\.csv: no such pair file"),
    ],
)
def test_load_pairs_errors(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_pairs(spec)


def test_pairset_checks_itself() -> None:
    imgs = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(DataError, match=r"t: same: expected a bool array of shape \(2,\)"):
        PairSet(imgs, imgs, np.array([1, 0]), "csv", "t")
    with pytest.raises(DataError, match=r"t: images_b: expected 2 images like images_a, got 1"):
        PairSet(imgs, imgs[:1], np.array([True, False]), "csv", "t")
    with pytest.raises(DataError, match=r"t: pair set kind must be one of"):
        PairSet(imgs, imgs, np.array([True, False]), "npy", "t")
