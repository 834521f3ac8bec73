"""ncnn and MNN, the Winograd FP32 engines: same function as the reference, typed errors for
what they cannot take, their artifacts through the engine store, and no telemetry."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from arcface_lab import create_engine
from arcface_lab.errors import ConversionError, ParamsError
from tests.conftest import cosines
from tests.tiny_model import TINY_DIM, write_tiny_onnx

BACKENDS = ("ncnn", "mnn")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _skip_unless(backend: str) -> None:
    from arcface_lab.engines.registry import get_backend

    reason = get_backend(backend).availability()
    if reason:
        pytest.skip(reason)


def _store(path: Path):
    from arcface_lab.store import EngineStore, LocalStore

    return EngineStore(LocalStore(path))


def _hardmax_onnx(path: Path) -> Path:
    """The tiny model with a Hardmax after its embedding: neither ncnn nor MNN has it."""
    import onnx
    from onnx import helper

    model = onnx.load(str(write_tiny_onnx(path)))
    graph = model.graph
    graph.node.append(helper.make_node("Hardmax", ["emb"], ["hard"], axis=1, name="the_hardmax"))
    graph.output[0].name = "hard"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_r18_matches_torch(backend: str, r18, torch_r18, faces, tmp_path: Path) -> None:
    _skip_unless(backend)
    with create_engine(backend, r18, strict=True, store=_store(tmp_path)) as engine:
        out = engine.embed(faces, batch_size=5)  # batches of 5, 5, 5, 1
        assert engine.info.backend == backend and engine.info.precision == "fp32"
        assert engine.info.artifact and engine.info.artifact["origin"] == "built"
    reference = torch_r18.embed(faces)
    assert out.shape == reference.shape
    assert cosines(out, reference).min() >= 0.99999


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_onnx_matches_onnxruntime(backend: str, tmp_path: Path, faces) -> None:
    """The tiny model is written at ONNX IR 14, which pnnx's own reader refuses: the
    converter's copy is lowered to what its opsets need."""
    from arcface_lab.models.source import resolve_model

    _skip_unless(backend)
    model = resolve_model(str(write_tiny_onnx(tmp_path / "tiny.onnx")), cache_dir=tmp_path)
    reference = create_engine("onnxruntime", model).embed(faces)
    with create_engine(backend, model, strict=True) as engine:
        out = engine.embed(faces, batch_size=3)
    assert out.shape == (len(faces), TINY_DIM)
    assert cosines(out, reference).min() >= 0.99999


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_round_trip_and_a_corrupted_artifact(
    backend: str, tmp_path: Path, faces, r18
) -> None:
    """Second creation reads the stored artifact; a tampered one is quarantined and rebuilt,
    never loaded."""
    _skip_unless(backend)
    store = _store(tmp_path / "store")
    with create_engine(backend, r18, strict=True, store=store) as first:
        expected = first.embed(faces[:4])
        art = dict(first.info.artifact or {})
    with create_engine(backend, r18, strict=True, store=store) as second:
        assert second.info.artifact and second.info.artifact["origin"] == "local"
        assert second.info.artifact["key"] == art["key"]
        np.testing.assert_array_equal(second.embed(faces[:4]), expected)
    [path] = (tmp_path / "store").glob(f"**/{art['key']}/artifact*")
    with open(path, "r+b") as f:  # same size, other bytes, in the middle of the weights
        f.seek(art["size"] // 2)
        f.write(b"\xff" * 64)
    with create_engine(backend, r18, strict=True, store=store) as third:
        assert third.info.artifact and third.info.artifact["origin"] == "built"
        assert any("corrupt" in w and "quarantined" in w for w in third.info.warnings)
        np.testing.assert_array_equal(third.embed(faces[:4]), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_operator_it_lacks_is_one_typed_error(backend: str, tmp_path: Path) -> None:
    from arcface_lab.models.source import resolve_model

    _skip_unless(backend)
    onnx_path = _hardmax_onnx(tmp_path / "hard.onnx")
    model = resolve_model(str(onnx_path), cache_dir=tmp_path / "cache")
    store_dir = tmp_path / "store"
    with pytest.raises(ConversionError, match=r"hard\.onnx: operator\(s\) Hardmax cannot run on"):
        create_engine(backend, model, strict=True, store=_store(store_dir))
    assert not list(store_dir.glob("**/artifact*"))  # nothing half-made was stored
    # In a chain it is a recorded fallback, and the next backend runs the model.
    engine = create_engine(f"{backend},onnxruntime", model, store=_store(store_dir))
    assert engine.info.backend == "onnxruntime"
    assert engine.info.fallbacks[0].backend == backend
    assert "Hardmax" in engine.info.fallbacks[0].reason


def test_ncnn_runs_fp32_only_with_winograd_as_an_option(r18, faces, tmp_path: Path) -> None:
    _skip_unless("ncnn")
    store = _store(tmp_path)
    with create_engine("ncnn", r18, strict=True, store=store, threads=1) as on:
        details = on.info.details
        assert details["winograd"] is True and details["threads"] == 1
        assert details["fp16"] is False and details["bf16"] is False
        assert "one face per extractor" in details["batching"]
        opt = on._net.opt
        assert not (opt.use_fp16_storage or opt.use_fp16_arithmetic or opt.use_bf16_storage)
        with_winograd = on.embed(faces[:4])
    with create_engine("ncnn", r18, strict=True, store=store, winograd=False) as off:
        assert off.info.details["winograd"] is False
        assert off.info.artifact and off.info.artifact["origin"] == "local"  # same conversion
        assert cosines(off.embed(faces[:4]), with_winograd).min() >= 0.99999


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_options_name_the_field(backend: str) -> None:
    from arcface_lab.engines.registry import get_backend

    cls = get_backend(backend)
    with pytest.raises(ParamsError, match=rf"{backend} options.*convert_timeout_s"):
        cls.parse_options({"convert_timeout_s": 0})
    with pytest.raises(ParamsError, match="fp16"):
        cls.parse_options({"fp16": True})


@pytest.mark.parametrize("backend", BACKENDS)
def test_native_on_this_cpu_emulated_under_an_isa_cap(backend: str) -> None:
    """Their kernels pick their ISA from CPUID, so under ONEDNN_MAX_CPU_ISA they would be
    timed as a class they do not run as: emulated, never timed by optimize."""
    from arcface_lab.core.host import probe
    from arcface_lab.engines.registry import get_backend

    _skip_unless(backend)
    host = probe()
    cls = get_backend(backend)
    assert cls.support("fp32", host, "cpu").status == ("emulated" if host.cpu.isa_cap else "native")
    capped = dataclasses.replace(host, cpu=dataclasses.replace(host.cpu, isa_cap="AVX2"))
    support = cls.support("fp32", capped, "cpu")
    assert support.status == "emulated" and "ignore the ISA cap (AVX2)" in support.reason
    assert cls.support("fp16", host, "cpu").status == "unavailable"


def test_mnn_never_imports_its_python_tools_nor_opens_a_socket(tmp_path: Path) -> None:
    """MNN.tools pip-installs and calls a telemetry SDK on import: a conversion and a run,
    watched by an audit hook in a fresh interpreter, open no socket, start no pip, leave
    MNN.tools unimported and convert through the C extension ``_tools`` only."""
    _skip_unless("mnn")
    repo = Path(__file__).resolve().parents[1]
    script = textwrap.dedent(f"""
        import json, sys
        events, started = [], []
        def hook(event, args):
            if event in ("socket.connect", "socket.getaddrinfo", "socket.sendto", "socket.bind"):
                events.append(event)
            if event == "subprocess.Popen":
                started.append(" ".join(map(str, args[1] or [])))
        sys.addaudithook(hook)
        sys.path.insert(0, {str(repo)!r})
        from tests.tiny_model import write_tiny_onnx
        from arcface_lab import create_engine
        from arcface_lab.data.images import synthetic_faces
        from arcface_lab.models.source import resolve_model
        model = resolve_model(str(write_tiny_onnx(__import__("pathlib").Path({str(tmp_path)!r}) / "t.onnx")),
                              cache_dir={str(tmp_path / "cache")!r})
        out = create_engine("mnn", model, strict=True).embed(synthetic_faces(2, seed=1))
        print("RESULT", json.dumps({{"events": events, "tools": "MNN.tools" in sys.modules,
                                     "shape": list(out.shape), "started": started}}))
        """)
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-2000:]
    # MNN's C++ banners went to stderr: stdout holds what the program printed, nothing else
    [line] = run.stdout.strip().splitlines()
    assert line.startswith("RESULT "), run.stdout
    result = json.loads(line[len("RESULT ") :])
    started = result.pop("started")
    assert result == {"events": [], "tools": False, "shape": [2, TINY_DIM]}
    # The one process it started is the converter, through the C extension alone.
    [converter] = [cmd for cmd in started if "mnnconvert" in cmd]
    assert "import sys, _tools;" in converter and "MNN.tools" not in converter
    assert not [cmd for cmd in started if "pip" in cmd.split()]
