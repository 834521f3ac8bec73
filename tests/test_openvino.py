"""OpenVINO backend: precision labels that hold, the store skipping rebuilds, INT8 gates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.engines.registry import create_engine, list_backends
from arcface_lab.errors import BackendUnavailable, InputError
from tests.conftest import cosines

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
HAVE_NNCF = importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="openvino is not installed")
needs_nncf = pytest.mark.skipif(not (HAVE_OPENVINO and HAVE_NNCF), reason="needs openvino+nncf")


def _store(path: Path):
    from arcface_lab.store import EngineStore, LocalStore

    return EngineStore(LocalStore(path))


def _native_bf16() -> bool:
    """OpenVINO reports BF16 and the (possibly injected) host class has it natively."""
    import openvino as ov

    from arcface_lab.core.host import probe

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities and probe().cpu.native_bf16


# --------------------------------------------------------------------------- availability


def test_missing_openvino_gives_the_install_hint(monkeypatch, r18):
    from arcface_lab.engines.openvino import OpenVinoEngine

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    reason = "openvino is not installed: pip install openvino"
    assert OpenVinoEngine.availability() == reason
    (row,) = list_backends("openvino")
    assert not row.available and row.reason == reason
    with pytest.raises(BackendUnavailable, match="openvino is not installed: pip install openvino"):
        create_engine("openvino", r18, strict=True)
    engine = create_engine("openvino,torch", r18)
    with engine:
        assert engine.info.backend == "torch"
        assert engine.info.fallbacks[0].reason == reason


def test_int8_gates_are_validated():
    from arcface_lab.engines.int8_search import Gates

    with pytest.raises(InputError, match=r"cosine_min: expected \(0, 1\], got 1.5"):
        Gates(1.5, 0)
    with pytest.raises(InputError, match="decision_flips_max: expected an integer >= 0, got -1"):
        Gates(0.999, -1)


# --------------------------------------------------------------------------- fp32 / bf16


@needs_openvino
def test_fp32_is_fp32_and_the_second_creation_loads_from_the_store(r18, faces, torch_r18, tmp_path):
    store = _store(tmp_path / "store")
    ref = torch_r18.embed(faces)
    with create_engine("openvino", r18, precision="fp32", strict=True, store=store) as first:
        emb = first.embed(faces)
        details = first.info.details
        assert details["inference_precision"] == "f32"  # set explicitly, not the bf16 default
        assert first.info.artifact["kind"] == "openvino-compiled"
        assert first.info.artifact["origin"] == "built"
        assert details["compile_s"] > 0 and details["import_s"] == 0
    assert cosines(ref, emb).min() >= 0.99999
    with create_engine("openvino", r18, precision="fp32", strict=True, store=store) as second:
        assert second.info.artifact["origin"] == "local"
        details = second.info.details
        assert details["build_s"] == 0 and details["compile_s"] == 0 and details["import_s"] > 0
        np.testing.assert_allclose(second.embed(faces), emb, atol=1e-6)


@needs_openvino
def test_bf16_keeps_the_embedding(r18, faces, torch_r18, tmp_path):
    if not _native_bf16():
        with pytest.raises(BackendUnavailable, match="no native BF16"):
            create_engine("openvino", r18, precision="bf16", strict=True)
        return
    store = _store(tmp_path / "store")
    with create_engine("openvino", r18, precision="bf16", strict=True, store=store) as engine:
        assert engine.info.details["inference_precision"] == "bf16"
        cos = cosines(torch_r18.embed(faces), engine.embed(faces))
    assert 0.999 <= cos.min() < 0.999999  # really bf16: close, not identical


@needs_openvino
def test_unknown_options_values_are_input_errors(r18, tmp_path):
    with pytest.raises(
        InputError, match="openvino options: performance_hint: expected one of LATENCY, THROUGHPUT"
    ):
        create_engine("openvino", r18, strict=True, performance_hint="fast")
    with pytest.raises(
        InputError, match="openvino options: threads: expected an integer >= 0, got -2"
    ):
        create_engine("openvino", r18, strict=True, threads=-2)


# --------------------------------------------------------------------------- int8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A 16x16 conv net as an ONNX file: INT8 searches on it take seconds."""
    import torch
    from torch import nn

    from arcface_lab.models.onnx_io import export_onnx
    from arcface_lab.models.source import resolve_model

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.PReLU(16),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.PReLU(32),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.PReLU(32),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 32),
    ).eval()
    folder = tmp_path_factory.mktemp("tiny")
    path = export_onnx(net, folder / "tiny.onnx", (3, 16, 16))
    return resolve_model(str(path), cache_dir=folder / "cache")


def _int8(tiny, store, **options):
    opts = {"calibration": "synthetic:24", "pairs": "synthetic:20", "flip": False, **options}
    return create_engine("openvino", tiny, precision="int8", strict=True, store=store, **opts)


@needs_nncf
def test_int8_needs_its_gates(tiny, tmp_path):
    with pytest.raises(BackendUnavailable, match="no accuracy gates given.*int8_cosine_min"):
        _int8(tiny, _store(tmp_path))


@needs_nncf
def test_int8_search_keeps_sensitive_layers_in_float_and_passes_honestly(
    tiny, tmp_path, monkeypatch
):
    from arcface_lab.core.host import probe
    from arcface_lab.core.progress import PROGRESS_ENV

    phase = tmp_path / "phase.txt"  # where a worker says what the search is doing
    monkeypatch.setenv(PROGRESS_ENV, str(phase))
    store = _store(tmp_path / "store")
    with _int8(tiny, store, int8_cosine_min=0.5, int8_flips_max=20) as engine:
        lenient = engine.info.details["int8"]
    assert lenient["passed"]
    full, floating = lenient["full_int8"]["cosine_min"], lenient["float_only"]["cosine_min"]
    assert full < floating  # int8 costs something, so a gate between the two needs a search
    # A gate 70 % of the way from float-only to full INT8: the least damaging of the three
    # quantizers fits, all three do not. int8_margin 1.0: the tiny net has no held-out faces.
    gate = round(floating - 0.7 * (floating - full), 6)
    # under the BF16 hint the stem (it reads the image) is an FP32 island; under the FP32 hint
    # of a CPU without native BF16 every float layer is FP32 already, so there is none
    islands = ["/0/Conv/WithoutBiases"] if _native_bf16() else []
    assert lenient["fp32_layers"] == islands
    assert lenient["overflow_fix"] == ("disable" if probe().cpu.vnni else "first_layer_only")
    with _int8(tiny, store, int8_cosine_min=gate, int8_flips_max=20, int8_margin=1.0) as engine:
        report = engine.info.details["int8"]
        assert engine.info.details["calibration_s"] > 0
        if _native_bf16():  # what the plugin runs, read back: the stem stays FP32
            assert engine.info.details["runtime_fp32_layers"] == ["/0/Conv/WithoutBiases"]
        assert _origins(engine)["openvino-int8"] == ["built"]
        # the calibration and both ends were measured by the lenient search: reused here
        assert _origins(engine)["openvino-int8-calibration"] == ["local"]
        assert _origins(engine)["openvino-int8-measure"] == ["local", "built"]  # sensitivity
    assert report["reused"] == ["calibration", "ends"]
    assert report["passed"] and report["result"]["cosine_min"] >= gate
    assert report["kept_float_layers"], "a gate above full INT8 keeps some layers in BF16"
    assert 0 < report["int8_layers"] < report["int8_layers"] + len(report["kept_float_layers"])
    for stem in islands:  # FP32 island: neither INT8 nor BF16
        assert stem not in report["int8_layer_names"] and stem not in report["kept_float_layers"]
    assert any(r.get("passed") for r in report["rounds"])
    assert phase.read_text().startswith("int8 search: round ")  # its last phase
    with _int8(tiny, store, int8_cosine_min=gate, int8_flips_max=20, int8_margin=1.0) as again:
        assert _origins(again) == {"openvino-int8": ["local"]}  # nothing else was needed
        assert again.info.details["calibration_s"] == 0
        assert again.info.details["int8"]["kept_float_layers"] == report["kept_float_layers"]
    # Another margin: a new search, everything gate-free reused; the same selection as a
    # search from nothing (the stored measurements are the measured ones, bit for bit).
    tighter = {"int8_cosine_min": gate, "int8_flips_max": 20, "int8_margin": 0.9}
    with _int8(tiny, store, **tighter) as reused:
        assert _origins(reused)["openvino-int8"] == ["built"]
        assert reused.info.details["int8"]["reused"] == ["calibration", "ends", "sensitivity"]
        kept = reused.info.details["int8"]["kept_float_layers"]
        most = reused.info.details["int8"]["most_sensitive"]
    with _int8(tiny, _store(tmp_path / "fresh"), **tighter) as fresh:
        assert fresh.info.details["int8"]["reused"] == []
        assert fresh.info.details["int8"]["kept_float_layers"] == kept
        assert fresh.info.details["int8"]["most_sensitive"] == most


def _origins(engine) -> dict[str, list[str]]:
    """Where each artifact an engine used came from, by kind, in the order it asked."""
    found: dict[str, list[str]] = {}
    for art in engine.info.details.get("artifacts", []):
        found.setdefault(art["kind"], []).append(art["origin"])
    return found


@needs_nncf
def test_int8_that_fails_its_gates_is_not_offered_but_can_be_measured(tiny, tmp_path):
    store = _store(tmp_path / "store")
    with pytest.raises(BackendUnavailable, match="openvino int8 fails its gates.*not offered"):
        _int8(tiny, store, int8_cosine_min=1.0, int8_flips_max=0)
    with _int8(tiny, store, int8_cosine_min=1.0, int8_flips_max=0, int8_enforce_gates=False) as e:
        report = e.info.details["int8"]
        assert e.info.artifact["origin"] == "built"  # the same INT8 artifact, compiled now
        assert _origins(e)["openvino-int8"] == ["local"]
        assert any("fails its gates" in w for w in e.info.warnings)
        assert e.embed(tiny_faces()).shape == (4, 32)
    assert not report["passed"]
    assert report["result"]["cosine_min"] < 1.0
    assert "fails the gates" in report["failure"]


def tiny_faces() -> np.ndarray:
    from arcface_lab.data.images import synthetic_faces

    return synthetic_faces(4, seed=5, size=(16, 16))


def test_bench_engine_specs_parse_options_and_refuse_garbage():
    from arcface_lab.runs.perf import parse_engines

    specs = parse_engines("torch:fp32, openvino:int8:int8_search=false")
    assert [s.label for s in specs] == ["torch/fp32", "openvino/int8 (int8_search=False)"]
    assert specs[1].options == (("int8_search", False),)
    with pytest.raises(InputError, match=r"--engines 'openvino': expected backend:precision"):
        parse_engines("openvino")


# --------------------------------------------------------------------------- fp32 islands


@needs_openvino
def test_fp32_islands_keep_the_stem_in_fp32_and_are_read_back(r18, faces, torch_r18, tmp_path):
    if not _native_bf16():
        pytest.skip("FP32 islands only matter under a BF16 hint")
    ref = torch_r18.embed(faces)
    store = _store(tmp_path / "store")
    with create_engine("openvino", r18, precision="bf16", strict=True, store=store) as engine:
        default = engine.info.details
        stem = cosines(ref, engine.embed(faces))
    with create_engine(
        "openvino", r18, precision="bf16", strict=True, store=store, fp32_layers="none"
    ) as engine:
        plain = engine.info.details
        everything_bf16 = cosines(ref, engine.embed(faces))
    assert default["fp32_layers"] == "input"
    assert default["runtime_fp32_layers"] == ["/conv1/Conv/WithoutBiases"]  # read back
    assert default["runtime_precisions"]["f32"] == 1
    assert "f32" not in plain["runtime_precisions"] and plain["runtime_fp32_layers"] == []
    # The image is no longer rounded to BF16: the worst face gets closer to the reference.
    assert stem.min() > everything_bf16.min()
    with create_engine("openvino", r18, precision="bf16", strict=True, store=store) as again:
        assert again.info.artifact["origin"] == "local"  # the marking survives export/import
        assert again.info.details["runtime_fp32_layers"] == ["/conv1/Conv/WithoutBiases"]


@needs_openvino
def test_fp32_islands_by_name_and_bad_names(r18, tmp_path):
    store = _store(tmp_path / "store")
    if not _native_bf16():
        with pytest.raises(BackendUnavailable, match=r"openvino bf16: this CPU has no native BF16"):
            create_engine("openvino", r18, precision="bf16", strict=True, store=store)
        pytest.skip("FP32 islands need the BF16 hint: this CPU has no AVX512_BF16 or AMX")
    name = "/layer1/layer1.0/conv1/Conv/WithoutBiases"
    with create_engine(
        "openvino", r18, precision="bf16", strict=True, store=store, fp32_layers=[name]
    ) as engine:
        assert engine.info.details["runtime_fp32_layers"] == [name]
    with pytest.raises(InputError, match=r"'/nope' is not a weighted layer of the model"):
        create_engine("openvino", r18, precision="bf16", store=store, fp32_layers=["/nope"])
    with pytest.raises(InputError, match="fp32_layers: expected 'input', 'none' or a list"):
        create_engine("openvino", r18, precision="bf16", store=store, fp32_layers=3)


def test_a_stored_int8_measurement_that_is_not_a_json_object_is_an_engine_error(tmp_path):
    """Verified bytes that do not parse, or parse to something else, are refused by name."""
    from types import SimpleNamespace

    from arcface_lab.engines.openvino_int8 import StoreMemo
    from arcface_lab.errors import EngineError

    stored = tmp_path / "measure.json"

    class Stored:  # an engine whose store hands back ``stored`` as the artifact
        info = SimpleNamespace(details={"artifacts": [{"origin": "local", "sha256": "x"}]})

        def _artifact(self, kind, inputs, build, main):
            return stored

    memo = StoreMemo(Stored(), None, {}, {})
    stored.write_bytes(b"\x80 not json")
    with pytest.raises(EngineError, match=r"measure.json: not a readable measurement"):
        memo.measured("ends", dict)
    stored.write_text("[1, 2]")
    with pytest.raises(EngineError, match=r"measure.json: expected a JSON object"):
        memo.measured("ends", dict)
    stored.write_text('{"full": {}}')
    assert memo.measured("ends", dict) == ({"full": {}}, True)
