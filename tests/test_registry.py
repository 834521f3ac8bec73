"""Engines behind one protocol; the registry's chain, fallbacks, strict mode and plugins."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.engines import registry
from arcface_lab.engines.base import Engine
from arcface_lab.engines.registry import create_engine, list_backends, register_backend
from arcface_lab.errors import BackendUnavailable, DataError, InputError, UnknownBackendError
from tests.conftest import cosines


def test_torch_and_onnxruntime_agree_per_face(r18, torch_r18, faces) -> None:
    with create_engine("onnxruntime", r18, precision="fp32", strict=True) as engine:
        emb = engine.embed(faces)
        assert engine.info.backend == "onnxruntime" and engine.info.fallbacks == []
    ref = torch_r18.embed(faces)
    assert emb.dtype == np.float32 and emb.shape == (16, 512)
    assert cosines(ref, emb).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_fp16_copy_keeps_fp32_io_and_the_model(r18, torch_r18, faces) -> None:
    with create_engine("onnxruntime", r18, precision="fp16", strict=True) as engine:
        emb = engine.embed(faces)
        assert any("weight rounding only" in w for w in engine.info.warnings)
    assert emb.dtype == np.float32 and np.isfinite(emb).all()
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.999


def test_raw_embeddings_are_not_normalized(torch_r18, faces) -> None:
    raw = torch_r18.embed(faces[:4], normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(
        raw / np.linalg.norm(raw, axis=1, keepdims=True), torch_r18.embed(faces[:4]), atol=1e-6
    )


def test_engine_checks_its_input(torch_r18, faces) -> None:
    with pytest.raises(DataError, match="expected dtype uint8"):
        torch_r18.embed(faces.astype(np.float32))
    with pytest.raises(DataError, match=r"expected 112x112 aligned face crops, got 100x112"):
        torch_r18.embed(faces[:, :100])
    with pytest.raises(DataError, match=r"expected shape \(N, H, W, 3\)"):
        torch_r18.embed(faces[0])


def test_fallback_is_recorded_and_logged(r18, faces, caplog) -> None:
    with create_engine("torch,onnxruntime", r18, precision="fp16") as engine:
        assert engine.info.backend == "onnxruntime"
        [fallback] = engine.info.fallbacks
    assert fallback.backend == "torch" and "precision 'fp16' not supported" in fallback.reason
    assert "backend torch skipped" in caplog.text


def test_strict_refuses_to_fall_back(r18) -> None:
    with pytest.raises(BackendUnavailable, match=r"backend 'torch' unavailable \(strict\).*fp16"):
        create_engine("torch,onnxruntime", r18, precision="fp16", strict=True)


def test_onnx_model_skips_torch_with_reason(tmp_path: Path, r18, cache_dir) -> None:
    from arcface_lab.models.source import resolve_model

    source = resolve_model(str(r18.onnx_path()), cache_dir=cache_dir)
    with create_engine("torch,onnxruntime", source) as engine:
        assert engine.info.backend == "onnxruntime"
        assert "is an ONNX file" in engine.info.fallbacks[0].reason


def test_unknown_backend_lists_known() -> None:
    with pytest.raises(
        UnknownBackendError,
        match=r"unknown backend 'tensorrtx'; known backends: .*onnxruntime, openvino, tensorrt, torch, torch_fast",
    ):
        create_engine("tensorrtx,torch", object())
    with pytest.raises(UnknownBackendError, match="empty backend chain"):
        create_engine(" , ", object())


def test_nothing_available_says_why(r18) -> None:
    with pytest.raises(
        BackendUnavailable, match=r"no backend in torch can run this model: torch: precision 'int8'"
    ):
        create_engine("torch", r18, precision="int8")


def test_list_backends_reports_availability() -> None:
    rows = {r.name: r for r in list_backends()}
    assert rows["torch"].available and rows["onnxruntime"].available
    assert [r.name for r in list_backends("onnx*")] == ["onnxruntime"]


@pytest.fixture
def clean_registry():
    saved = dict(registry._backends), registry._loaded, dict(registry._plugin_errors)
    yield
    registry._backends.clear()
    registry._backends.update(saved[0])
    registry._loaded = saved[1]
    registry._plugin_errors.clear()
    registry._plugin_errors.update(saved[2])


def test_unavailable_backend_is_listed_with_reason(clean_registry) -> None:
    @register_backend
    class NeedsGpu(Engine):
        name = "needs_gpu"
        description = "test"

        @classmethod
        def availability(cls) -> str | None:
            return "no CUDA device"

        def _load(self) -> None: ...

        def _infer(self, x: np.ndarray) -> np.ndarray:
            raise AssertionError

    [row] = list_backends("needs_*")
    assert not row.available and row.reason == "no CUDA device"
    with pytest.raises(TypeError, match="already registered"):
        register_backend(type("Other", (NeedsGpu,), {"name": "needs_gpu"}))


def test_entry_point_plugins_register(tmp_path: Path, clean_registry, monkeypatch) -> None:
    dist = tmp_path / "arcface_lab_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: arcface-lab-demo-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[arcface_lab.backends]\ndemo = demo_backend:DemoEngine\nbroken = no_such_module:X\n"
    )
    (tmp_path / "demo_backend.py").write_text(textwrap.dedent("""
            import numpy as np
            from arcface_lab.engines.base import Engine

            class DemoEngine(Engine):
                name = "demo"
                description = "a plugin"

                def _load(self):
                    pass

                def _infer(self, x):
                    return np.ones((x.shape[0], 8), np.float32)
            """))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._loaded = False
    rows = {r.name: r for r in list_backends()}
    assert rows["demo"].available and rows["demo"].description == "a plugin"
    assert not rows["broken"].available and "failed to load" in (rows["broken"].reason or "")
    sys.modules.pop("demo_backend", None)


def test_ort_tensorrt_provider_profile_and_absence(r18) -> None:
    with create_engine(
        "onnxruntime", r18, precision="fp16", strict=True, batch_min=2, batch_max=64
    ) as engine:
        opts = engine._trt_options()
    assert opts["trt_fp16_enable"] is True
    assert opts["trt_profile_min_shapes"] == "input:2x3x112x112"
    assert opts["trt_profile_opt_shapes"] == "input:32x3x112x112"
    assert opts["trt_profile_max_shapes"] == "input:64x3x112x112"
    with pytest.raises(
        BackendUnavailable, match=r"execution provider\(s\) tensorrt not in this build"
    ):
        create_engine(
            "onnxruntime",
            r18,
            strict=True,
            backend_options={"onnxruntime": {"providers": "tensorrt,cpu"}},
        )


def test_unknown_backend_option_is_an_input_error(r18) -> None:
    from arcface_lab.errors import InputError

    with pytest.raises(
        InputError,
        match=r"onnxruntime options: unknown key\(s\) provider; expected any of .*providers",
    ):
        create_engine(
            "onnxruntime,torch", r18, backend_options={"onnxruntime": {"provider": "cpu"}}
        )


def test_auto_chain_is_tensorrt_then_torch_fast_on_a_gpu_and_openvino_on_a_cpu(r18) -> None:
    from arcface_lab.engines.registry import default_chain, parse_chain

    assert default_chain("cuda:1") == ["tensorrt", "torch_fast", "onnxruntime", "torch"]
    assert default_chain("cpu") == ["openvino", "onnxruntime", "torch"]
    assert parse_chain("auto", "cpu") == default_chain("cpu")
    assert parse_chain(" AUTO ", "cuda") == default_chain("cuda")
    with create_engine("auto", r18, device="cpu") as engine:
        first = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
        assert engine.info.backend == first


def test_onnxruntime_gpu_provider_options_are_checked_on_the_cpu(r18) -> None:
    """What the CUDA and TensorRT EPs would get (their runs need a GPU: `gpu` tests)."""
    from arcface_lab.engines.onnxruntime import OnnxRuntimeEngine

    bad_order = OnnxRuntimeEngine(r18, device="cpu", batch_size=16, batch_opt=32, batch_max=8)
    with bad_order, pytest.raises(InputError, match=r"^onnxruntime option batch_max: expected"):
        bad_order._trt_options()
    too_small = OnnxRuntimeEngine(r18, device="cpu", batch_size=16, batch_max=8)
    with (
        too_small,
        pytest.raises(InputError, match="batch_max: 8 is below the engine's batch_size"),
    ):
        too_small._trt_options()
    with OnnxRuntimeEngine(r18, device="cpu", batch_size=16) as e:
        e.device = "cuda:2"  # as if on the third GPU: both EPs are told which one
        trt = e._trt_options()
        assert trt["device_id"] == 2 and trt["trt_profile_max_shapes"].endswith(":16x3x112x112")
        e.device = "gpu:1"
        with pytest.raises(InputError, match="expected cpu, cuda or cuda:N"):
            e._device_index()
