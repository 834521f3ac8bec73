"""Params files are validated on load, with errors naming the file and field."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from arcface_lab.config.params import Params, load_params
from arcface_lab.engines.registry import check_params
from arcface_lab.errors import ParamsError

PARAMS_DIR = Path(__file__).resolve().parents[1] / "params"


@pytest.mark.parametrize("path", sorted(PARAMS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_committed_params_load(path: Path) -> None:
    params = load_params(path)
    assert params.backends.chain and params.thresholds.cosine_min


def test_defaults_and_values() -> None:
    p = Params.from_mapping(
        {"model": {"spec": "seeded:r18"}, "thresholds": {"cosine_min": {"fp16": 0.999}}}
    )
    assert p.model.spec == "seeded:r18" and p.thresholds.cosine_min == {"fp16": 0.999}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"modle": {}}, r"x.yaml: unknown key\(s\) modle; expected any of name, model"),
        ({"model": {"sped": "x"}}, r"x.yaml: model: unknown key\(s\) sped"),
        (
            {"thresholds": {"cosine_min": {"fp16": "high"}}},
            r"thresholds.cosine_min.fp16: expected a number in \[0, 1\], got 'high'",
        ),
        (
            {"thresholds": {"cosine_min": {"fp8": 0.9}}},
            r"thresholds.cosine_min: unknown key\(s\) fp8",
        ),
        (
            {"backends": {"precisions": ["fp64"]}},
            r"backends.precisions: expected one of fp32, fp16, bf16, int8, got 'fp64'",
        ),
        ({"bench": {"batch_sizes": [0]}}, r"bench.batch_sizes: expected an integer >= 1, got 0"),
        (
            {"backends": {"chain": ["onnxruntime", "tensorrtx"]}},
            r"backends.chain: expected a backend name \(.*onnxruntime.*\), got 'tensorrtx'",
        ),
        (
            {"backends": {"options": {"ort": {}}}},
            r"backends.options: expected a backend name .* got 'ort'",
        ),
        (
            {"backends": {"options": {"onnxruntime": {"provider": "cpu"}}}},
            r"backends.options.onnxruntime: unknown key\(s\) provider; expected any of .*providers",
        ),
        ({"store": {"s3": "http://x"}}, r"store.s3: expected s3://BUCKET/PREFIX, got 'http://x'"),
        ([1, 2], r"x.yaml: expected a mapping, got \[1, 2\]"),
    ],
)
def test_bad_values_name_the_field(raw: object, message: str) -> None:
    """Backend names and options are checked by the registry (the engines wing), the rest on load."""
    with pytest.raises(ParamsError, match=message):
        check_params(Params.from_mapping(raw, "x.yaml"))


def test_reading_params_loads_no_backend() -> None:
    """The config wing never imports the registry: a YAML is parsed without loading engines."""
    code = (
        "import sys; from arcface_lab.config.params import load_params; "
        f"load_params({str(PARAMS_DIR / 'default.yaml')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('arcface_lab.engines.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = ast.literal_eval(out.stdout.strip())
    assert not [
        m for m in loaded if m.rsplit(".", 1)[-1] in ("openvino", "onnxruntime", "tensorrt")
    ]


def test_a_relative_params_path_is_found_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_params("params/ci.yaml").name == "ci"  # the repository's, from elsewhere
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "ci.yaml").write_text(
        (PARAMS_DIR / "ci.yaml").read_text().replace("name: ci", "name: mine")
    )
    assert load_params("params/ci.yaml").name == "mine"  # the working directory's first
    with pytest.raises(ParamsError, match=r"nope.yaml: cannot read params file .*also not under"):
        load_params("params/nope.yaml")


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="nope.yaml: cannot read params file"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_an_empty_params_file_is_an_error_naming_it(tmp_path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(ParamsError, match=r"^.*empty\.yaml: empty params file; expected a mapping"):
        load_params(empty)


def test_a_yaml_error_is_one_line_with_line_and_column(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  spec: seeded:r18\n  arch: [r18\n")
    with pytest.raises(ParamsError) as info:
        load_params(bad)
    message = str(info.value)
    assert "\n" not in message and "bad.yaml: not valid YAML at line" in message
    assert "column" in message
