"""Golden folders: record a model's embeddings of the team's faces, check them after a change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.config.params import Params, ReenrolmentParams, Thresholds
from arcface_lab.errors import GoldenIntegrityError, InputError
from arcface_lab.measure.golden import check_golden, read_golden, record_golden

ROOT = Path(__file__).resolve().parents[1]
GATES = Thresholds(cosine_min={"fp32": 0.99999}, decision_flips_max=0)
#: 24 faces of 6 identities: 276 pairs, 240 of them impostors (FAR 1e-2 is measurable).
LIMITS = ReenrolmentParams(fars=(1e-2,), fpirs=(0.5,))


@pytest.fixture(scope="module")
def labelled() -> tuple[np.ndarray, np.ndarray]:
    from arcface_lab.data.stream import SyntheticSource

    faces = SyntheticSource(24, 11, faces_per_identity=4).read(0, 24)
    return faces, np.arange(24) // 4


def test_a_golden_round_trip_passes_on_the_same_model_and_names_what_changed(
    torch_r18, r18, labelled, tmp_path: Path
) -> None:
    faces, labels = labelled
    folder = record_golden(tmp_path / "g", torch_r18, r18, faces, labels)
    record, arrays = read_golden(folder)
    assert record["faces"] == 24 and record["labelled"] and record["engine"]["backend"] == "torch"
    assert record["model"]["sha256"] == r18.sha256() and record["hardware_class"]
    assert sorted(record["files"]) == ["embeddings.npy", "faces.npy", "labels.npy"]
    assert np.array_equal(arrays["faces"], faces) and arrays["labels"].tolist()[:5] == [
        "0",
        "0",
        "0",
        "0",
        "1",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing half-done
    same = check_golden(folder, torch_r18, r18, GATES, LIMITS)
    assert same["passed"], same["reason"]
    assert same["worst_face"]["cosine"] > 0.99999 and same["flips"] == {"0.01": 0}
    assert same["reenrolment"]["required"] is False and same["changed"] == []
    assert [g["measured"] for g in same["gates"]][1:] == [0, "no re-enrolment needed"]
    assert same["reason"].startswith("Golden check PASS") and "nothing recorded changed" in (
        same["reason"]
    )
    # an older library version in the record: the check says what changed
    raw = json.loads((folder / "golden.json").read_text())
    raw["versions"]["numpy"] = "1.0.0"
    (folder / "golden.json").write_text(json.dumps(raw))
    again = check_golden(folder, torch_r18, r18, GATES, LIMITS)
    assert again["passed"] and again["changed"] == [f"numpy 1.0.0 -> {np.__version__}"]
    with pytest.raises(InputError, match="exists and is not empty; a golden is never written"):
        record_golden(folder, torch_r18, r18, faces, labels)


def test_another_model_fails_naming_the_worst_face(
    torch_r18, r18, labelled, tmp_path: Path, cache_dir: Path
) -> None:
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.models.source import resolve_model

    faces, labels = labelled
    folder = record_golden(tmp_path / "g", torch_r18, r18, faces, labels)
    other = resolve_model("seeded:r18", cache_dir=cache_dir, seed=1)
    with create_engine("torch", other, strict=True) as engine:
        result = check_golden(folder, engine, other, GATES, LIMITS)
    assert not result["passed"]
    worst = result["worst_face"]
    assert result["reason"].startswith(
        f"Golden check FAIL: face {worst['index']} has cosine {worst['cosine']:.6f}, under the "
        "gate 0.99999 for fp32."
    )
    assert any(c.startswith("model sha256 ") for c in result["changed"])
    assert not result["gates"][0]["holds"]


def test_a_tampered_golden_file_is_an_integrity_error(
    torch_r18, r18, labelled, tmp_path: Path
) -> None:
    faces, _ = labelled
    folder = record_golden(tmp_path / "g", torch_r18, r18, faces[:4])
    embeddings = np.load(folder / "embeddings.npy")
    embeddings[0, 0] += 0.5
    np.save(folder / "embeddings.npy", embeddings)
    with pytest.raises(
        GoldenIntegrityError, match=r"embeddings.npy: sha256 .* is not the recorded"
    ):
        check_golden(folder, torch_r18, r18, GATES, LIMITS)
    whole = record_golden(tmp_path / "g2", torch_r18, r18, faces[:4])
    (whole / "faces.npy").unlink()
    with pytest.raises(GoldenIntegrityError, match=r"faces.npy: missing"):
        read_golden(whole)
    with pytest.raises(InputError, match=r"not a golden folder"):
        read_golden(tmp_path)


def test_golden_on_the_command_line_across_two_backends(
    r18, tmp_path: Path, cache_dir: Path
) -> None:
    """Recorded by torch, checked with ONNX Runtime: FP32 both, so the gates hold (exit 0);
    gates no engine can meet (a params file) fail with exit 3 and the worst face."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "arcface_lab", "golden", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    golden = tmp_path / "golden"
    model = ["--model", "seeded:r18", "--cache-dir", str(cache_dir)]
    made = cli(
        "record", *model, "--backend", "torch", "--input", "synthetic:8", "--out", str(golden)
    )
    assert made.returncode == 0, made.stderr
    assert f"recorded 8 faces (no labels) embedded by torch/fp32 on cpu in {golden}" in made.stdout
    out = tmp_path / "check.json"
    checked = cli("check", str(golden), *model, "--backend", "onnxruntime", "--out", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(out.read_text())
    assert result["passed"] and "engine backend torch -> onnxruntime" in result["changed"]
    strict = tmp_path / "strict.yaml"
    strict.write_text("thresholds: {cosine_min: {fp32: 1.0}}\n")
    failed = cli("check", str(golden), *model, "--backend", "onnxruntime", "--params", str(strict))
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "Golden check FAIL: face " in failed.stdout and "under the gate 1 for fp32" in (
        failed.stdout
    )
    again = cli(
        "record", *model, "--backend", "torch", "--input", "synthetic:8", "--out", str(golden)
    )
    assert again.returncode == 2 and "a golden is never written over" in again.stderr


def test_params_defaults_judge_the_golden_check() -> None:
    """The command's thresholds come from params (the default file), never from code."""
    from arcface_lab.config.params import default_params_file, load_params

    path = default_params_file()
    assert path is not None
    params = load_params(path)
    assert params.thresholds.cosine_min["fp32"] == 0.99999
    assert (
        params.reenrolment
        == Params.from_mapping(
            {
                "reenrolment": {
                    "fars": [0.001, 0.0001],
                    "fpirs": [0.01],
                    "tar_loss_max": 0.01,
                    "fnir_rise_max": 0.01,
                    "far_inflation_max": 2.0,
                }
            }
        ).reenrolment
    )
