"""Backend options are declared once, as dataclasses, and parsed by the field parsers."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcface_lab.config.fields import Ctx, option_docs, parse_options
from arcface_lab.config.params import Params
from arcface_lab.engines.registry import check_params, get_backend
from arcface_lab.errors import InputError, ParamsError


@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "tensorrt", "torch_fast"])
def test_option_names_come_from_the_dataclass(name: str) -> None:
    cls = get_backend(name)
    assert cls.option_names == set(option_docs(cls.Options))
    assert all("default" in doc for doc in option_docs(cls.Options).values())
    defaults = cls.parse_options({})
    assert defaults == cls.Options()  # every option has its documented default


def test_values_are_parsed_and_typed() -> None:
    ov = get_backend("openvino").parse_options(
        {"performance_hint": "throughput", "pairs": "none", "int8_margin": 1, "threads": 2}
    )
    assert ov.performance_hint == "THROUGHPUT" and ov.pairs is None
    assert ov.int8_margin == 1.0 and ov.threads == 2
    ort = get_backend("onnxruntime").parse_options({"providers": "TensorRT, cpu"})
    assert ort.providers == ("tensorrt", "cpu")
    assert get_backend("onnxruntime").parse_options({"providers": "auto"}).providers == ()


@pytest.mark.parametrize(
    ("backend", "options", "message"),
    [
        ("openvino", {"int8_margin": 0}, r"int8_margin: expected a number in \(0, 1\], got 0"),
        ("openvino", {"int8_search": "yes"}, r"int8_search: expected true or false, got 'yes'"),
        ("tensorrt", {"workspace_mb": 0}, r"workspace_mb: expected an integer >= 1, got 0"),
        ("onnxruntime", {"providers": "gpu"}, r"providers: expected auto or a comma-separated"),
        ("torch_fast", {"tf32": 1}, r"tf32: expected true or false, got 1"),
    ],
)
def test_a_bad_value_in_a_params_file_names_the_file_and_field(
    backend: str, options: dict, message: str
) -> None:
    params = Params.from_mapping({"backends": {"options": {backend: options}}}, "p.yaml")
    with pytest.raises(ParamsError, match=rf"^p\.yaml: backends\.options\.{backend}\.{message}"):
        check_params(params)


def test_a_bad_value_given_in_code_names_the_backend() -> None:
    with pytest.raises(InputError, match=r"^openvino options: int8_margin: expected a number"):
        get_backend("openvino").parse_options({"int8_margin": 2})
    with pytest.raises(ParamsError, match=r"^x: unknown key\(s\) nope; expected any of"):
        parse_options(get_backend("tensorrt").Options, {"nope": 1}, Ctx("x"))


def test_committed_params_options_parse() -> None:
    from arcface_lab.config.params import load_params

    for path in sorted((Path(__file__).resolve().parents[1] / "params").glob("*.yaml")):
        check_params(load_params(path))
