"""Input conventions other than insightface's: NHWC, raw 0..255, other embedding sizes.

Each model here is built by the test (an NHWC or NCHW input, a convolution, a projection
to D dimensions); the expected embeddings come from ONNX Runtime fed a tensor prepared
by hand, so a convention the workbench drops or misapplies shows as a mismatch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from arcface_lab import create_engine
from arcface_lab.config.params import load_params
from arcface_lab.models.source import resolve_model
from tests.conftest import cosines

ROOT = Path(__file__).resolve().parents[1]


def _model(path: Path, layout: str, dim: int) -> Path:
    """A dynamic-batch face model taking ``layout`` input and giving ``dim``-d embeddings."""
    rng = np.random.default_rng(dim)
    w = rng.normal(0, 0.05, (8, 3, 8, 8)).astype(np.float32)
    fc = rng.normal(0, 0.05, (8 * 14 * 14, dim)).astype(np.float32)
    nodes = []
    x = "input"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["embedding"]),
    ]
    shape = ["batch", 112, 112, 3] if layout == "NHWC" else ["batch", 3, 112, 112]
    graph = helper.make_graph(
        nodes,
        f"conv-{layout}-{dim}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _by_hand(path: Path, faces: np.ndarray, mean: float, std: float, layout: str) -> np.ndarray:
    import onnxruntime as ort

    x = (faces.astype(np.float32) - mean) / std
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.ascontiguousarray(x)})[0]


@pytest.mark.parametrize("dim", [128, 256, 512])
def test_raw_nhwc_models_of_each_size_on_the_command_line(
    tmp_path: Path, faces: np.ndarray, dim: int
) -> None:
    model = _model(tmp_path / "m.onnx", "NHWC", dim)
    np.save(tmp_path / "faces.npy", faces)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(ROOT)}
    out = tmp_path / "e.npy"
    args = ["--model", str(model), "--input", str(tmp_path / "faces.npy"), "--raw"]
    args += ["--nhwc", "--mean", "0", "--std", "1", "--backend", "onnxruntime", "--strict"]
    proc = subprocess.run(
        [sys.executable, "-m", "arcface_lab", "embed", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert got.shape == (len(faces), dim)
    np.testing.assert_allclose(got, _by_hand(model, faces, 0.0, 1.0, "NHWC"), rtol=1e-4, atol=1e-4)
    # insightface's convention on the same model gives other embeddings: the flags mattered
    assert not np.allclose(got, _by_hand(model, faces, 127.5, 127.5, "NHWC"), atol=1e-2)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_params_model_block_sets_the_convention(
    tmp_path: Path, faces: np.ndarray, backend: str
) -> None:
    pytest.importorskip(backend)
    model = _model(tmp_path / "m.onnx", "NHWC", 256)
    params = tmp_path / "p.yaml"
    params.write_text(f"model: {{spec: {model}, mean: 0, std: 1}}\n")
    m = load_params(params).model
    assert m.overrides() == {"mean": 0.0, "std": 1.0}
    source = resolve_model(m.spec, preprocess=m.overrides(), cache_dir=tmp_path / "cache")
    assert source.preprocess.layout == "NHWC"  # the layout read from the model's input
    assert (source.preprocess.mean, source.preprocess.std) == (0.0, 1.0)
    with create_engine(backend, source, strict=True) as engine:
        got = engine.embed(faces, normalize=False)
    want = _by_hand(model, faces, 0.0, 1.0, "NHWC")
    assert got.shape == (len(faces), 256)
    assert cosines(got, want).min() >= 0.9999


def test_an_nchw_model_left_at_its_defaults_uses_insightfaces_convention(
    tmp_path: Path, faces: np.ndarray
) -> None:
    model = _model(tmp_path / "m.onnx", "NCHW", 128)
    source = resolve_model(str(model), cache_dir=tmp_path / "cache")
    with create_engine("onnxruntime", source, strict=True) as engine:
        got = engine.embed(faces, normalize=False)
    want = _by_hand(model, faces, 127.5, 127.5, "NCHW")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
