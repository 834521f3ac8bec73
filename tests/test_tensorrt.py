"""Native TensorRT: the pure build steps on CPU; building and running on a GPU with TensorRT."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from arcface_lab.engines.registry import create_engine
from arcface_lab.engines.tensorrt import (
    Profile,
    TensorRTEngine,
    artifact_inputs,
    check_precision,
    choose_recipe,
    classify_dtype,
    layer_precisions,
    parse_profile,
)
from arcface_lab.errors import BackendUnavailable, EngineError, InputError
from arcface_lab.store import EngineStore, LocalStore, artifact_key
from tests.conftest import cosines


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------------ profile
def test_parse_profile_accepts_ordered_batches() -> None:
    assert parse_profile(1, 32, 64) == Profile(1, 32, 64)
    assert parse_profile(8, 8, 8).shapes((3, 112, 112)) == ((8, 3, 112, 112),) * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 1), r"tensorrt option batch_min: expected an integer >= 1, got 0"),
        ((1, -2, 4), r"tensorrt option batch_opt: expected an integer >= 1, got -2"),
        ((1, 1, "8"), r"tensorrt option batch_max: expected an integer >= 1, got '8'"),
        ((1, 1, True), r"tensorrt option batch_max: expected an integer >= 1, got True"),
        (
            (4, 2, 8),
            r"tensorrt option batch_opt: expected batch_min <= batch_opt <= batch_max, got batch_min=4 > batch_opt=2",
        ),
        (
            (1, 16, 8),
            r"tensorrt option batch_max: expected batch_min <= batch_opt <= batch_max, got batch_opt=16 > batch_max=8",
        ),
    ],
)
def test_parse_profile_names_the_bad_field(args, message) -> None:
    with pytest.raises(InputError, match=f"^{message}$"):
        parse_profile(*args)


# ------------------------------------------------------------------------------ recipe
def test_recipe_tensorrt_10_sets_the_fp16_flag_on_the_fp32_model() -> None:
    r = choose_recipe(10, "fp16")
    assert r.onnx == "fp32" and r.network_flags == ()
    assert r.set_flags == ("FP16",) and r.clear_flags == ("TF32",)
    r = choose_recipe(10, "fp32")
    assert r.onnx == "fp32" and r.set_flags == () and r.clear_flags == ("TF32",)
    assert not r.tf32


def test_recipe_tensorrt_11_builds_an_fp16_onnx_copy_strongly_typed() -> None:
    r = choose_recipe(11, "fp16")
    assert r.onnx == "fp16-io32" and r.network_flags == ("STRONGLY_TYPED",)
    assert "FP16" not in r.set_flags and r.clear_flags == ("TF32",)
    r = choose_recipe(12, "fp32")
    assert r.onnx == "fp32" and r.set_flags == () and r.network_flags == ("STRONGLY_TYPED",)
    assert "strongly typed" in r.describe() and "FP16 ONNX" in choose_recipe(11, "fp16").describe()


def test_recipe_tf32_is_an_option() -> None:
    for major in (10, 11):
        r = choose_recipe(major, "fp32", tf32=True)
        assert r.tf32 and "TF32" in r.set_flags and r.clear_flags == ()


def test_recipe_refuses_old_tensorrt_and_unknown_precisions() -> None:
    with pytest.raises(
        BackendUnavailable, match=r"tensorrt 8\.x is too old: arcface_lab needs TensorRT >= 10"
    ):
        choose_recipe(8, "fp16")
    with pytest.raises(
        BackendUnavailable,
        match=r"tensorrt: precision 'int8' not supported \(supported: fp32, fp16\)",
    ):
        choose_recipe(10, "int8")


# ------------------------------------------------------------------------------ key inputs
def _inputs(**change):
    args = dict(
        onnx_sha256="a" * 64,
        recipe=choose_recipe(10, "fp16"),
        profile=Profile(1, 32, 32),
        trt_version="10.9.0",
        device={"kind": "cuda", "name": "NVIDIA H100", "compute_capability": "9.0"},
        workspace_mb=1024,
        hardware_compatibility=False,
        converter_version=None,
    )
    args.update(change)
    return artifact_inputs(**args)


def test_artifact_inputs_hold_everything_that_makes_a_plan() -> None:
    base = _inputs()
    assert base["backend"] == "tensorrt" and base["precision"] == "fp16"
    assert base["device"]["compute_capability"] == "9.0"
    assert base["flags"] == {"tf32": False, "hardware_compatibility": False, "workspace_mb": 1024}
    assert "onnxconverter-common" not in base["library"]
    fp16_11 = _inputs(recipe=choose_recipe(11, "fp16"), converter_version="1.16.0")
    assert fp16_11["library"]["onnxconverter-common"] == "1.16.0"


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"recipe": choose_recipe(10, "fp32")},
        {"recipe": choose_recipe(11, "fp16")},
        {"recipe": choose_recipe(10, "fp16", tf32=True)},
        {"profile": Profile(1, 16, 32)},
        {"profile": Profile(1, 32, 64)},
        {"trt_version": "10.9.1"},
        {"device": {"kind": "cuda", "name": "NVIDIA A100", "compute_capability": "8.0"}},
        {"device": {"kind": "cuda", "name": "NVIDIA H100", "compute_capability": "9.1"}},
        {"workspace_mb": 2048},
        {"hardware_compatibility": True},
    ],
)
def test_artifact_key_changes_with_every_field(change) -> None:
    assert artifact_key(_inputs(**change)) != artifact_key(_inputs())


# ------------------------------------------------------------------------------ inspection
TRT10_INFO = {
    "Layers": [
        {
            "Name": "conv1 + bn1",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
            "Outputs": [
                {
                    "Name": "t1",
                    "Format/Datatype": "Channel major FP16 format where channel % 8 == 0",
                }
            ],
        },
        {
            "Name": "fc",
            "LayerType": "CaskGemm",
            "Inputs": [{"Name": "t1", "Format/Datatype": "Channel major FP16 format"}],
            "Outputs": [{"Name": "t2", "Format/Datatype": "Row major linear FP16 format"}],
        },
        {
            "Name": "reformat",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "t2", "Format/Datatype": "Row major linear FP16 format"}],
            "Outputs": [{"Name": "embedding", "Format/Datatype": "Row major linear FP32"}],
        },
    ],
    "Bindings": ["input", "embedding"],
}
TRT11_INFO = {
    "Layers": [
        {
            "Name": "conv1",
            "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "input", "DataType": "Half", "Format": "Channel major (kHWC8)"}],
            "Outputs": [{"Name": "t1", "DataType": "Half", "Format": "Channel major (kHWC8)"}],
        },
        {
            "Name": "out",
            "LayerType": "Reformat",
            "Inputs": [{"Name": "t1", "DataType": "Half"}],
            "Outputs": [{"Name": "embedding", "DataType": "Float"}],
        },
    ],
    "I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"}],
}


def test_classify_dtype_reads_both_inspector_schemas() -> None:
    assert classify_dtype("Channel major FP16 format where channel % 8 == 0") == "FP16"
    assert classify_dtype("Half") == "FP16" and classify_dtype("Float") == "FP32"
    assert (
        classify_dtype("BFloat16") == "BF16" and classify_dtype("Row major linear Int8") == "INT8"
    )
    assert classify_dtype("Row major linear Int32") == "INT32" and classify_dtype("?") == "unknown"


def test_layer_precisions_count_tensorrt_10_and_11_json() -> None:
    p10 = layer_precisions(TRT10_INFO)
    assert p10["counts"] == {"FP16": 2, "FP32": 1}
    assert [layer["precision"] for layer in p10["layers"]] == ["FP16", "FP16", "FP32"]
    assert p10["layers"][0] == {
        "name": "conv1 + bn1",
        "type": "CaskConvolution",
        "precision": "FP16",
    }
    import json

    assert layer_precisions(json.dumps(TRT11_INFO))["counts"] == {"FP16": 1, "FP32": 1}
    names_only = layer_precisions({"Layers": ["conv1", "fc"]})
    assert names_only["counts"] == {"unknown": 2}
    # What an inspector without an execution context prints for a dynamic-batch engine
    # (the engine now hands it one with the input shape set): no precision to count.
    dynamic = {
        "Layers": [
            {
                "Name": "conv1",
                "LayerType": "CaskConvolution",
                "Inputs": [{"Name": "input", "Format/Datatype": "N/A due to dynamic shapes"}],
                "Outputs": [{"Name": "t1", "Format/Datatype": "N/A due to dynamic shapes"}],
            }
        ]
    }
    unseen = layer_precisions(dynamic)
    assert unseen["counts"] == {"unknown": 1}
    assert "unverified" in str(check_precision("fp16", unseen))


def test_fp16_engine_without_fp16_layers_is_an_error() -> None:
    fp32_only = {"counts": {"FP32": 40}}
    with pytest.raises(
        EngineError,
        match=r"^tensorrt: asked for fp16, got an engine with no FP16 layers \(layer precisions: \{'FP32': 40\}\)$",
    ):
        check_precision("fp16", fp32_only)
    assert check_precision("fp32", fp32_only) is None
    assert check_precision("fp16", {"counts": {"FP16": 3, "FP32": 1}}) is None
    assert "unverified" in str(check_precision("fp16", {"counts": {"unknown": 5}}))


# ------------------------------------------------------------------------------ fallback
@pytest.mark.skipif(
    TensorRTEngine.availability() is None, reason="TensorRT and a CUDA device are present"
)
def test_unavailable_here_falls_back_to_onnxruntime(r18, faces) -> None:
    reason = TensorRTEngine.availability()
    assert reason in (
        "tensorrt is not installed: pip install tensorrt",
        "no CUDA device: torch.cuda.is_available() is False",
    )
    with create_engine("tensorrt,onnxruntime", r18, precision="fp32") as engine:
        assert engine.info.backend == "onnxruntime"
        [fallback] = engine.info.fallbacks
        assert engine.embed(faces[:2]).shape == (2, 512)
    assert fallback.backend == "tensorrt" and fallback.reason == reason
    with pytest.raises(BackendUnavailable, match=r"^backend 'tensorrt' unavailable \(strict\): "):
        create_engine("tensorrt", r18, strict=True)


# ------------------------------------------------------------------------------ on a GPU
@pytest.fixture()
def trt_gpu():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not _cuda():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    return trt


def _store(tmp_path) -> EngineStore:
    return EngineStore(LocalStore(tmp_path / "store"))


@pytest.mark.gpu
def test_fp16_plan_is_fp16_close_to_torch_and_cached(
    trt_gpu, r18, faces, torch_r18, tmp_path
) -> None:
    options = {"tensorrt": {"store": _store(tmp_path), "batch_max": 16}}
    with create_engine(
        "tensorrt", r18, precision="fp16", strict=True, batch_size=16, backend_options=options
    ) as engine:
        emb = engine.embed(faces)
        info = engine.info
        split = engine.embed(faces, batch_size=32)  # above batch_max: split inside the engine
    assert info.backend == "tensorrt" and info.device.startswith("cuda")
    assert info.artifact is not None and info.artifact["origin"] == "built"
    counts = info.details["layer_precisions"]["counts"]
    assert counts.get("FP16", 0) > 0, counts
    assert info.details["engine_device_memory_mb"] is not None
    assert info.details["torch_max_memory_allocated_mb"] > 0
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.999
    np.testing.assert_allclose(split, emb, atol=1e-3)

    with create_engine(
        "tensorrt", r18, precision="fp16", strict=True, batch_size=16, backend_options=options
    ) as again:
        assert again.info.artifact is not None and again.info.artifact["origin"] == "local"
        assert again.info.artifact["key"] == info.artifact["key"]
        assert cosines(emb, again.embed(faces)).min() >= 0.99999


@pytest.mark.gpu
def test_fp32_plan_is_strict_fp32(trt_gpu, r18, faces, torch_r18, tmp_path) -> None:
    options = {"tensorrt": {"store": _store(tmp_path), "timing_cache": False}}
    with create_engine("tensorrt", r18, strict=True, backend_options=options) as engine:
        emb = engine.embed(faces)
        assert engine.info.details["tf32"] is False
        counts = engine.info.details["layer_precisions"]["counts"]
        assert counts.get("FP32", 0) > 0 and "FP16" not in counts, counts  # seen, not unknown
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.99999


def test_default_batch_opt_is_never_below_batch_min() -> None:
    """Only batch_min and batch_max given: batch_opt defaults into their range, no error."""
    from types import SimpleNamespace

    def settings(**options: object) -> tuple:
        fake = SimpleNamespace(options=options, batch_size=32, opts=TensorRTEngine.Options())
        return TensorRTEngine._settings(fake)

    assert settings(batch_min=64, batch_max=128)[0].to_dict()["opt"] == 64
    assert settings(batch_max=8)[0].to_dict()["opt"] == 8
    assert settings()[0].to_dict()["opt"] == 32
