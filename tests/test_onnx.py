"""ONNX export, model checks, static-batch rewrite, external data confinement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from arcface_lab.engines.registry import create_engine
from arcface_lab.errors import InputError, ModelFormatError, UnsafeFileError
from arcface_lab.models.onnx_io import inspect_onnx, load_onnx
from arcface_lab.models.source import resolve_model
from tests.conftest import cosines


def _tiny_static_model(path: Path, batch: int = 1, reshape_batch: bool = True) -> Path:
    """A batch-1 face model the way old exporters wrote them: conv, reshape [1, -1], matmul."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1 if reshape_batch else -1, -1], np.int64), "shape")
    fc = numpy_helper.from_array(rng.normal(0, 0.1, (4 * 14 * 14, 16)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[8, 8]),
        helper.make_node("Reshape", ["c", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 16])],
        [w, shape, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_export_has_dynamic_batch_and_matches_torch(r18, torch_r18, faces) -> None:
    info = inspect_onnx(load_onnx(r18.onnx_path()), r18.onnx_path())
    assert info.dynamic_batch and info.input_shape[1:] == (3, 112, 112)
    assert info.opset >= 17 and info.embedding_dim == 512
    with create_engine("onnxruntime", r18, strict=True) as ort_engine:
        ours = ort_engine.embed(faces, batch_size=5)  # uneven batches on purpose
    assert cosines(torch_r18.embed(faces), ours).min() >= 0.99999


def test_static_batch_is_rewritten_and_verified(tmp_path: Path, cache_dir: Path, faces) -> None:
    path = _tiny_static_model(tmp_path / "w600k_tiny.onnx")
    source = resolve_model(str(path), cache_dir=cache_dir)
    dynamic = source.onnx_path()
    assert dynamic != path and inspect_onnx(load_onnx(dynamic), dynamic).dynamic_batch
    with create_engine("onnxruntime", source, strict=True) as engine:
        batched = engine.embed(faces[:6])
        single = np.concatenate([engine.embed(faces[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_static_exported_iresnet_is_rewritten(tmp_path: Path, r18, cache_dir: Path, faces) -> None:
    import torch

    path = tmp_path / "r18_b1.onnx"
    torch.onnx.export(
        r18.torch_module(),
        (torch.zeros(1, 3, 112, 112),),
        str(path),
        dynamo=False,
        input_names=["data"],
        output_names=["fc1"],
        opset_version=17,
    )
    source = resolve_model(str(path), cache_dir=cache_dir)
    with create_engine("onnxruntime", source, strict=True) as engine:
        emb = engine.embed(faces[:4])
    with create_engine("torch", r18, strict=True) as ref:
        assert cosines(ref.embed(faces[:4]), emb).min() >= 0.99999


def _with_external(tmp_path: Path, location: str) -> Path:
    model = onnx.load(str(_tiny_static_model(tmp_path / "m.onnx")))
    tensor = next(t for t in model.graph.initializer if t.name == "fc")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    path = tmp_path / "model" / "ext.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_folder_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 4096)
    path = _with_external(tmp_path, location)
    with pytest.raises(UnsafeFileError, match=r"ext.onnx: tensor 'fc' points its external data"):
        load_onnx(path)
    with pytest.raises(UnsafeFileError, match="outside the model's folder"):
        resolve_model(str(path)).onnx_path()


def test_model_checks_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(ModelFormatError, match="junk.onnx: not a readable ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])
    flat = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )
    onnx.save(flat, str(tmp_path / "flat.onnx"))
    with pytest.raises(
        ModelFormatError, match=r"flat.onnx: input 'x' has shape \[1, 512\]; expected 4-D"
    ):
        resolve_model(str(tmp_path / "flat.onnx"))
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 112, 112])
    two = helper.make_model(
        helper.make_graph([helper.make_node("Add", ["a", "x"], ["y"])], "g", [a, x], [y])
    )
    onnx.save(two, str(tmp_path / "two.onnx"))
    with pytest.raises(ModelFormatError, match="two.onnx: expected exactly one input.*got a, x"):
        resolve_model(str(tmp_path / "two.onnx"))


def test_resolve_model_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model missing.pth: no such file"):
        resolve_model("missing.pth")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(InputError, match=r"unknown suffix '.txt'"):
        resolve_model(str(tmp_path / "m.txt"))
    with pytest.raises(InputError, match=r"layout: .* which is NCHW, not NHWC"):
        from arcface_lab.core.preprocess import Preprocess

        resolve_model(
            str(_tiny_static_model(tmp_path / "s.onnx")), preprocess=Preprocess(layout="NHWC")
        )


@pytest.fixture(scope="module")
def r18_external(r18, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``seeded:r18`` saved the way large exports are: graph in one file, weights in w.bin."""
    folder = tmp_path_factory.mktemp("external")
    model = load_onnx(r18.onnx_path())
    path = folder / "r18_ext.onnx"
    onnx.save(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin"
    )
    assert (folder / "w.bin").stat().st_size > path.stat().st_size * 10
    return path


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_external_data_model_runs_on_each_backend(
    r18_external: Path, torch_r18, faces, tmp_path: Path, backend: str
) -> None:
    from arcface_lab.store import EngineStore, LocalStore

    pytest.importorskip(backend)
    store = EngineStore(LocalStore(tmp_path / "store"))
    source = resolve_model(str(r18_external), cache_dir=tmp_path / "cache")
    canonical = source.onnx_path()
    assert canonical.parent != r18_external.parent  # a cached copy, not the user's folder
    with create_engine(backend, source, strict=True, store=store) as engine:
        emb = engine.embed(faces)
        artifact = engine.info.artifact
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.99999
    assert artifact is not None and artifact["origin"] == "built"
    # Every file in the store stands alone: no tensor points at a w.bin beside it.
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert stored and not any(p.name == "w.bin" for p in stored)
    for p in stored:
        if p.suffix == ".onnx":
            assert not any(
                t.data_location == TensorProto.EXTERNAL
                for t in onnx.load(str(p), load_external_data=False).graph.initializer
            )


def test_external_data_is_part_of_the_model_hash(tmp_path: Path) -> None:
    model = onnx.load(str(_tiny_static_model(tmp_path / "m.onnx")))
    path = tmp_path / "ext" / "tiny.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="w.bin")
    before = resolve_model(str(path), cache_dir=tmp_path / "cache").sha256()
    data = bytearray((path.parent / "w.bin").read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight: the graph file itself is unchanged
    (path.parent / "w.bin").write_bytes(bytes(data))
    assert resolve_model(str(path), cache_dir=tmp_path / "cache").sha256() != before
    (path.parent / "w.bin").unlink()
    with pytest.raises(ModelFormatError, match=r"tiny.onnx: its external data file\(s\) w.bin"):
        resolve_model(str(path), cache_dir=tmp_path / "cache").sha256()


def test_store_refuses_a_graph_with_external_data(tmp_path: Path) -> None:
    from arcface_lab.models.onnx_io import check_self_contained

    model = onnx.load(str(_tiny_static_model(tmp_path / "m.onnx")))
    path = tmp_path / "ext" / "tiny.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, size_threshold=0, location="w.bin")
    with pytest.raises(ModelFormatError, match="must be one self-contained file"):
        check_self_contained(path, "onnxruntime optimized graph")
    check_self_contained(tmp_path / "m.onnx", "a file with inline weights")
