"""FP32 islands: chosen OpenVINO operations kept in FP32 under a BF16 inference hint.

With ``INFERENCE_PRECISION_HINT=bf16`` the CPU plugin runs every floating-point
operation in BF16. An operation whose runtime info carries
``ov::DisablePrecisionConversion`` (written ``<attribute name="precise"
version="0"/>`` in IR) keeps its original FP32. The attribute cannot be created
from Python (``RTMap`` takes only strings and integers), so :func:`keep_fp32`
writes it into the IR: the model is saved, the named layers get the attribute
and the IR is read back from memory.

Why it pays on ArcFace: the stem convolution is the only one that reads the
image, and under the BF16 hint the image itself is rounded to 8 significant
bits. On seeded r50 that rounding alone costs the worst face 0.0003 of cosine
(0.99930 -> 0.99957 with the stem in FP32), a third of a 0.999 budget, while the
stem has 0.3 % of the multiply-accumulates.

What ran in which precision is read back from the compiled model
(:func:`runtime_precisions`), so a plugin that ignored the attribute shows up in
the engine's record instead of in a wrong claim.
"""

from __future__ import annotations

import math
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from arcface_lab.errors import InputError

__all__ = [
    "FP32_OPTION",
    "WEIGHTED_OPS",
    "activation_source",
    "fp32_option",
    "input_layers",
    "keep_fp32",
    "layer_macs",
    "resolve_fp32_layers",
    "runtime_precisions",
    "weighted_layers",
]

#: Operations OpenVINO can run in a reduced precision whose cost matters.
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")
#: Operations an activation passes through unchanged on its way to a weighted op.
TRANSPARENT_OPS = ("Reshape", "Squeeze", "Unsqueeze", "Transpose", "MaxPool", "Convert")
#: Runtime-graph layer types of the weighted operations (the CPU plugin's names).
_RUNTIME_WEIGHTED = ("Convolution", "FullyConnected", "MatMul")
#: IR name and version of ``ov::DisablePrecisionConversion`` (formerly DisableFP16Compression).
_ATTRIBUTE = {"name": "precise", "version": "0"}


def weighted_layers(model: Any) -> list[str]:
    """Friendly names of the model's weighted operations, in execution order."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHTED_OPS
    ]


def activation_source(op: Any) -> Any:
    """The node ``op``'s activation input comes from, looking through reshapes and the like."""
    node = op.input_value(0).get_node()
    while node.get_type_name() in TRANSPARENT_OPS:
        node = node.input_value(0).get_node()
    return node


def layer_macs(op: Any) -> int:
    """Multiply-accumulates per image of a weighted op (0 when shapes are not static)."""
    weights = op.input(1).get_partial_shape()
    out = op.output(0).get_partial_shape()
    if not weights.is_static or out.rank.is_dynamic:
        return 0
    w = math.prod(int(d) for d in weights.to_shape())
    if op.get_type_name() == "MatMul":
        return w
    return w * math.prod(d.get_length() if d.is_static else 1 for d in list(out)[2:])


def input_layers(model: Any) -> list[str]:
    """Weighted operations whose activation input is a model input (through reshapes)."""
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in WEIGHTED_OPS
        and activation_source(op).get_type_name() == "Parameter"
    ]


#: How the ``fp32_layers`` option is named in errors.
FP32_OPTION = "openvino options: fp32_layers"


def fp32_option(value: Any, source: str) -> str | list[str]:
    """The ``fp32_layers`` option checked and normalised: ``"input"``, ``"none"`` or names.

    Raises:
        InputError: anything else (``source`` names the option in the message).
    """
    if value is None:
        return "none"
    if isinstance(value, str) and value.lower() in ("input", "none"):
        return value.lower()
    names = isinstance(value, Sequence) and not isinstance(value, str)
    if names and all(isinstance(v, str) for v in value):
        return list(value)
    raise InputError(f"{source}: expected 'input', 'none' or a list of layer names, got {value!r}")


def resolve_fp32_layers(model: Any, value: Any, source: str) -> list[str]:
    """The option value (``"input"``, ``"none"`` or a list of layer names) as layer names.

    Raises:
        InputError: an invalid value (:func:`fp32_option`), or a name that is not a
            weighted operation of the model (the error lists a few that are).
    """
    value = fp32_option(value, source)
    if value == "none":
        return []
    if value == "input":
        return input_layers(model)
    known = weighted_layers(model)
    unknown = [str(v) for v in value if v not in known]
    if unknown:
        raise InputError(
            f"{source}: {', '.join(map(repr, unknown))} is not a weighted layer of the model; "
            f"weighted layers are named like {', '.join(map(repr, known[:3]))} "
            f"({len(known)} in all)"
        )
    return [str(v) for v in value]


def keep_fp32(model: Any, names: Iterable[str], core: Any) -> Any:
    """A copy of ``model`` whose layers ``names`` keep FP32 under a BF16 hint.

    Raises:
        InputError: a name that is not a layer of the model.
    """
    import openvino as ov

    wanted = set(names)
    if not wanted:
        return model
    with tempfile.TemporaryDirectory(prefix="arcface-lab-ov-") as tmp:
        xml_path = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml_path), compress_to_fp16=False)
        tree = ET.parse(xml_path)
        found = set()
        for layer in tree.getroot().iter("layer"):
            if layer.get("name") not in wanted:
                continue
            rt_info = layer.find("rt_info")
            if rt_info is None:
                rt_info = ET.SubElement(layer, "rt_info")
            if not any(a.get("name") == _ATTRIBUTE["name"] for a in rt_info.iter("attribute")):
                ET.SubElement(rt_info, "attribute", _ATTRIBUTE)
            found.add(layer.get("name"))
        missing = sorted(wanted - found)
        if missing:
            raise InputError(f"keep_fp32: no layer named {', '.join(map(repr, missing))}")
        xml = ET.tostring(tree.getroot(), encoding="utf-8")
        weights = xml_path.with_suffix(".bin").read_bytes()
    return core.read_model(xml, weights)


def runtime_precisions(compiled: Any) -> dict[str, list[str]]:
    """The weighted layers the compiled model runs in each precision (``{"bf16": [...]}``).

    Read from the compiled model's runtime graph (``runtimePrecision``), so it reports
    what the plugin chose, not what was asked for.
    """
    layers: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in _RUNTIME_WEIGHTED:
            precision = str(info["runtimePrecision"].astype(str))
            layers.setdefault(precision, []).append(op.get_friendly_name())
    return dict(sorted(layers.items()))
