"""The command line end to end, through subprocesses: names, flags, outputs, exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cosines

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("xdg")
    return {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": str(ROOT)}


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arcface_lab", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_backends_json(env) -> None:
    proc = cli(env, "backends", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["backends"]}
    assert rows["torch"]["available"] and rows["onnxruntime"]["available"]
    text = cli(env, "backends")
    assert text.returncode == 0 and "onnxruntime" in text.stdout


def test_embed_torch_and_onnxruntime_agree(env, tmp_path: Path) -> None:
    faces = tmp_path / "faces.npy"
    from arcface_lab.data.images import synthetic_faces

    np.save(faces, synthetic_faces(6, seed=2))
    out = {}
    for backend in ("torch", "onnxruntime"):
        info = tmp_path / f"{backend}.json"
        proc = cli(
            env,
            "embed",
            "--model",
            "seeded:r18",
            "--input",
            str(faces),
            "--backend",
            backend,
            "--out",
            str(tmp_path / f"{backend}.npy"),
            "--info-json",
            str(info),
        )
        assert proc.returncode == 0, proc.stderr
        assert f"via {backend} fp32 on cpu" in proc.stdout
        out[backend] = np.load(tmp_path / f"{backend}.npy")
        assert json.loads(info.read_text())["backend"] == backend
    assert out["torch"].shape == (6, 512) and out["torch"].dtype == np.float32
    assert cosines(out["torch"], out["onnxruntime"]).min() >= 0.99999


def test_embed_fallback_is_reported(env, tmp_path: Path) -> None:
    proc = cli(
        env,
        "embed",
        "--model",
        "seeded:r18",
        "--input",
        "synthetic:2",
        "--backend",
        "torch,onnxruntime",
        "--precision",
        "fp16",
        "--out",
        str(tmp_path / "e.npy"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped torch: precision 'fp16' not supported" in proc.stdout


def test_export_onnx_from_checkpoint(env, tmp_path: Path) -> None:
    import torch

    from arcface_lab.models.checkpoint import seeded_model

    torch.save(seeded_model("r18").state_dict(), tmp_path / "backbone.pth")
    proc = cli(
        env,
        "export-onnx",
        "--weights",
        str(tmp_path / "backbone.pth"),
        "--out",
        str(tmp_path / "m.onnx"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "dynamic batch" in proc.stdout and (tmp_path / "m.onnx").is_file()
    e = cli(
        env,
        "embed",
        "--model",
        str(tmp_path / "m.onnx"),
        "--input",
        "synthetic:3",
        "--out",
        str(tmp_path / "e.npy"),
    )
    # The default chain is "auto": OpenVINO first on a CPU (ONNX Runtime where it is missing).
    first = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    assert e.returncode == 0 and f"via {first} fp32 on cpu" in e.stdout, e.stderr


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["embed", "--model", "seeded:r9", "--input", "synthetic:2", "--out", "x.npy"],
            ["--model seeded:r9: unknown architecture"],
        ),
        (
            ["embed", "--model", "nope.pth", "--input", "synthetic:2", "--out", "x.npy"],
            ["--model nope.pth: no such file"],
        ),
        (
            ["embed", "--model", "seeded:r18", "--input", "missing.npy", "--out", "x.npy"],
            ["missing.npy: no such file or folder"],
        ),
        (
            [
                "embed",
                "--model",
                "seeded:r18",
                "--input",
                "synthetic:2",
                "--out",
                "x.npy",
                "--backend",
                "tensorrtx",
            ],
            ["unknown backend 'tensorrtx'; known backends:"],
        ),
        (["embed", "--model", "seeded:r18"], ["the following arguments are required"]),
        (
            ["verify", "--model", "seeded:r18", "--pairs", "synthetic:5", "--out", "v.json"],
            ["need at least 10 pairs"],
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(env, tmp_path: Path, args, needles) -> None:
    assert_one_line_error(cli(env, *args, cwd=tmp_path), 2, *needles)
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "v.json").exists()


def test_strict_unavailable_exits_1(env, tmp_path: Path) -> None:
    proc = cli(
        env,
        "embed",
        "--model",
        "seeded:r18",
        "--input",
        "synthetic:2",
        "--backend",
        "torch",
        "--precision",
        "fp16",
        "--strict",
        "--out",
        str(tmp_path / "e.npy"),
    )
    assert_one_line_error(proc, 1, "backend 'torch' unavailable (strict)")


def test_verify_and_drift_json_contract(env, tmp_path: Path) -> None:
    proc = cli(
        env,
        "verify",
        "--model",
        "seeded:r18",
        "--pairs",
        "synthetic:20",
        "--backend",
        "onnxruntime",
        "--precision",
        "fp16",
        "--out",
        str(tmp_path / "v.json"),
        "--check",
        str(ROOT / "params" / "ci.yaml"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = json.loads((tmp_path / "v.json").read_text())
    for key in (
        "pairs",
        "data_kind",
        "backend_used",
        "precision",
        "accuracy_delta",
        "decision_flips",
        "tar_at_far",
    ):
        assert key in v
    assert v["data_kind"] == "synthetic" and v["pairs"] == 20
    assert {"accuracy", "accuracy_std", "threshold"} <= set(v["reference"])
    assert {"accuracy", "accuracy_std"} <= set(v["engine"])
    assert {"min", "p001", "mean", "worst"} <= set(v["cosine"]) and v["cosine"]["min"] >= 0.999
    d = cli(
        env,
        "drift",
        "--model",
        "seeded:r18",
        "--input",
        "synthetic:4",
        "--out",
        str(tmp_path / "d.json"),
    )
    assert d.returncode == 0, d.stderr
    assert json.loads((tmp_path / "d.json").read_text())["cosine"]["min"] >= 0.99999


def test_check_exits_3_when_a_threshold_is_missed(env, tmp_path: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text("thresholds:\n  cosine_min: {fp16: 1.0}\n")
    proc = cli(
        env,
        "drift",
        "--model",
        "seeded:r18",
        "--input",
        "synthetic:4",
        "--precision",
        "fp16",
        "--backend",
        "onnxruntime",  # named: auto never picks fp16, which a CPU only emulates
        "--out",
        str(tmp_path / "d.json"),
        "--check",
        str(strict),
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("fp16 cosine min"))
    assert ">= 1" in row and "FAIL" in row and "verdict: FAIL" in proc.stdout


def test_malicious_bin_is_refused_and_never_runs(env, tmp_path: Path) -> None:
    target = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {target}",))

    (tmp_path / "lfw.bin").write_bytes(pickle.dumps(([Payload()], [True])))
    proc = cli(
        env,
        "verify",
        "--model",
        "seeded:r18",
        "--pairs",
        str(tmp_path / "lfw.bin"),
        "--out",
        str(tmp_path / "v.json"),
    )
    assert_one_line_error(proc, 2, "lfw.bin", "posix.system")
    assert not target.exists() and not (tmp_path / "v.json").exists()


def test_bench_json_contract(env, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    proc = cli(
        env,
        "bench",
        "--model",
        "seeded:r18",
        "--backends",
        "torch,onnxruntime,tensorrt",
        "--precision",
        "fp16",
        "--batch-sizes",
        "1,2",
        "--input",
        "synthetic:4",
        "--warmup-s",
        "0",
        "--budget-s",
        "0.1",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(out.read_text())
    records = {(r["backend"], r["precision"], r["batch_size"]): r for r in payload["records"]}
    assert set(records) == {
        (b, p, s) for b, p in [("torch", "fp32"), ("onnxruntime", "fp16")] for s in (1, 2)
    }
    keys = {
        "latency_ms",
        "throughput_ips",
        "cov",
        "speedup_vs_reference",
        "cosine_min",
        "peak_memory_mb",
        "memory_kind",
        "device",
    }
    for r in records.values():
        assert keys <= set(r) and r["memory_kind"] == "rss" and r["peak_memory_mb"] > 0
        assert {"median", "p90", "p99"} <= set(r["latency_ms"])
    assert records[("torch", "fp32", 2)]["speedup_vs_reference"] == 1.0
    assert records[("onnxruntime", "fp16", 2)]["cosine_min"] >= 0.999
    [missing] = payload["unavailable"]
    assert missing["backend"] == "tensorrt" and "tensorrt is not installed" in missing["reason"]


def test_int8_gates_come_from_params_and_a_missing_gate_is_named(env, tmp_path: Path) -> None:
    lenient = tmp_path / "no-int8.yaml"
    lenient.write_text("thresholds:\n  cosine_min: {fp32: 0.999}\n")
    args = ["--model", "seeded:r18", "--precision", "int8", "--backend", "openvino"]
    proc = cli(env, "build", *args, "--params", str(lenient), "--out", str(tmp_path / "b.json"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"arcface-lab build: error: --params {lenient}: INT8 needs accuracy gates: "
        "thresholds.cosine_min.int8 and thresholds.decision_flips_max"
    )
    assert not (tmp_path / "b.json").exists()


def test_the_clis_int8_options_are_the_runs_own_with_the_gates_enforced() -> None:
    """One resolver of a candidate's options: the CLI's INT8 engine calibrates as the run's
    does (the run's faces, pairs and data.flip), and refuses an engine missing its gates."""
    import argparse

    from arcface_lab.cli import _int8_options
    from arcface_lab.config.params import Params
    from arcface_lab.measure.optimize import engine_options

    raw = {
        "data": {"images": "synthetic:16", "pairs": "synthetic:20", "flip": False},
        "thresholds": {"cosine_min": {"int8": 0.995}, "decision_flips_max": 0},
    }
    params = Params.from_mapping(raw, "p.yaml")
    got = _int8_options(argparse.Namespace(), "int8", params)["openvino"]
    run = engine_options("openvino", "int8", params)
    assert got["flip"] is False and run["int8_enforce_gates"] is False
    assert got == {k: v for k, v in run.items() if k != "int8_enforce_gates"}
    assert _int8_options(argparse.Namespace(), "fp32", params) == {}


def test_build_openvino_int8_takes_its_gates_from_params(env, tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    gates = tmp_path / "int8.yaml"
    gates.write_text(
        "data: {images: synthetic:16, held_out: synthetic:8, pairs: synthetic:20}\n"
        "thresholds:\n  cosine_min: {int8: 0.995}\n  decision_flips_max: 0\n"
    )
    args = ["--model", "seeded:r18", "--precision", "int8", "--backend", "openvino", "--strict"]
    proc = cli(env, "build", *args, "--params", str(gates), "--out", str(tmp_path / "b.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"int8 gates from {gates}: cosine min >= 0.995, decision flips <= 0" in proc.stderr
    built = json.loads((tmp_path / "b.json").read_text())
    assert built["backend"] == "openvino" and built["precision"] == "int8"
    assert built["artifact"]["kind"] == "openvino-compiled"
    assert "openvino-int8" in {a["kind"] for a in built["artifacts"]}


@pytest.mark.parametrize(
    "device, message",
    [
        ("gpu0", "argument --device: 'gpu0': expected cpu, cuda or cuda:N"),
        ("cuda", "argument --device: 'cuda': this machine has no CUDA GPU (use cpu)"),
    ],
)
def test_a_device_the_machine_lacks_is_refused_before_any_work(
    env, tmp_path: Path, device: str, message: str
) -> None:
    env = {**env, "ARCFACE_LAB_HOST_CLASS": "cpu-avx2"}  # no GPU, whatever this machine has
    out = tmp_path / "e.npy"
    proc = cli(
        env,
        "embed",
        "--model",
        "seeded:r18",
        "--input",
        "synthetic:2",
        "--out",
        str(out),
        "--device",
        device,
    )
    assert proc.returncode == 2 and proc.stderr.strip() == f"arcface-lab embed: error: {message}"
    assert not out.exists()


def test_optimize_prints_every_candidate_and_the_choice_and_never_overwrites(
    env, tmp_path: Path
) -> None:
    out = tmp_path / "opt"
    args = ["optimize", "--params", str(ROOT / "params" / "ci.yaml"), "--out", str(out)]
    proc = cli({**env, "ARCFACE_LAB_HOST_CLASS": "cpu-avx2"}, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "onnxruntime/fp16" in proc.stdout and "not_native" in proc.stdout
    chosen = next(line for line in proc.stdout.splitlines() if line.startswith("chosen: "))
    assert chosen.endswith("x torch/fp32 at batch 8")
    payload = json.loads((out / "optimize.json").read_text())
    assert payload["host"]["class"] == "cpu-avx2" and chosen.startswith(
        f"chosen: {payload['chosen']['label']}, "
    )
    again = cli(env, *args)
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"arcface-lab optimize: error: --out {out}: already holds an optimize.json; "
        "pick a new folder"
    )


def test_external_data_model_through_embed_and_drift(env, tmp_path: Path) -> None:
    import onnx

    from arcface_lab.models.source import resolve_model

    exported = resolve_model("seeded:r18", cache_dir=tmp_path / "cache").onnx_path()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    onnx.save(
        onnx.load(str(exported)),
        str(model_dir / "r18.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
    )
    common = ("--model", str(model_dir / "r18.onnx"), "--input", "synthetic:4")
    embed = cli(env, "embed", *common, "--backend", "openvino", "--out", str(tmp_path / "e.npy"))
    assert embed.returncode == 0, embed.stderr
    assert np.load(tmp_path / "e.npy").shape == (4, 512)
    drift = cli(
        env, "drift", *common, "--backend", "onnxruntime", "--out", str(tmp_path / "d.json")
    )
    assert drift.returncode == 0, drift.stderr
    assert json.loads((tmp_path / "d.json").read_text())["cosine"]["min"] >= 0.99999
    (model_dir / "w.bin").unlink()
    gone = cli(env, "embed", *common, "--out", str(tmp_path / "gone.npy"))
    assert_one_line_error(gone, 2, "r18.onnx", "w.bin")
    assert not (tmp_path / "gone.npy").exists()


def _bad_model(kind: str, folder: Path) -> Path:
    """A model wrong in one way: NaN weights, a 4-D output, a sparse initializer."""
    import torch

    if kind == "nan.pth":
        from arcface_lab.models.iresnet import build_iresnet

        state = build_iresnet("r18").state_dict()
        state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, folder / kind)
        return folder / kind
    from tests.tiny_model import write_tiny_onnx

    return write_tiny_onnx(folder / kind, defect=kind.split(".")[0])


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("nan.pth", "weight 'layer2.0.conv1.weight' holds 1 NaN or infinite value(s)"),
        ("nan.onnx", "weight 'fc' holds 1 NaN or infinite value(s)"),
        ("out4d.onnx", "output 'c' has shape ['b', 4, 14, 14]; expected 2-D (batch, embedding)"),
        ("sparse.onnx", "1 sparse initializer(s) (fc); expected dense weights"),
    ],
)
def test_a_broken_model_is_one_line_naming_the_file(
    env, tmp_path: Path, kind: str, needle: str
) -> None:
    model = _bad_model(kind, tmp_path)
    out = tmp_path / "e.npy"
    args = ("--model", str(model), "--input", "synthetic:2", "--out", str(out))
    proc = cli(env, "embed", *args, "--backend", "onnxruntime")
    assert_one_line_error(proc, 2, str(model), needle)
    assert not out.exists()


@pytest.fixture
def full_disk(tmp_path: Path):
    """A real 4 MiB filesystem (tmpfs): an engine or an export cannot fit on it."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"a small filesystem needs mount (CAP_SYS_ADMIN): {made.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(
    env, tmp_path: Path, full_disk: Path
) -> None:
    common = ("embed", "--model", "seeded:r18", "--input", "synthetic:2", "--strict")
    warm = cli(env, *common, "--backend", "onnxruntime", "--out", str(tmp_path / "warm.npy"))
    assert warm.returncode == 0, warm.stderr  # the export is cached: the store write comes next
    store = full_disk / "store"
    out = tmp_path / "e.npy"
    proc = cli(
        env, *common, "--backend", "onnxruntime", "--local-store", str(store), "--out", str(out)
    )
    assert_one_line_error(proc, 1, f"{store}: no room to write the ", "point --local-store at")
    assert not out.exists()
    assert not [p for p in store.rglob("*") if p.is_file() and p.suffix != ".lock"]
    cache = full_disk / "cache"
    proc = cli(env, *common, "--backend", "torch", "--cache-dir", str(cache), "--out", str(out))
    assert_one_line_error(proc, 1, f"{cache}", ": no room to write ", "--cache-dir")
    assert not out.exists() and not [p for p in cache.rglob("*") if p.is_file()]


def test_run_time_all_times_every_candidate_as_make_reference_publishes() -> None:
    """``make report`` prunes the candidates that cannot win; ``--time-all`` does not."""
    from arcface_lab.cli import build_parser, run_params

    default = ROOT / "params" / "default.yaml"
    pruned = run_params(build_parser().parse_args(["run", str(default)]))
    every = run_params(build_parser().parse_args(["run", str(default), "--time-all"]))
    assert pruned.optimize.prune and not every.optimize.prune
    assert every.source.endswith("(with optimize.prune overridden)")
    assert "--time-all" in (ROOT / "Makefile").read_text().split("\nreference:")[1]
