"""What a built engine runs in: layer precisions read back from TensorRT's engine inspector."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from arcface_lab.errors import EngineError

_DTYPE_PATTERNS = (
    ("BF16", re.compile(r"bf16|bfloat16")),
    ("FP16", re.compile(r"fp16|half")),
    ("FP8", re.compile(r"fp8|e4m3")),
    ("FP4", re.compile(r"fp4|e2m1")),
    ("INT8", re.compile(r"int8")),
    ("INT4", re.compile(r"int4")),
    ("INT32", re.compile(r"int32")),
    ("INT64", re.compile(r"int64")),
    ("BOOL", re.compile(r"bool")),
    ("FP32", re.compile(r"fp32|float")),
)


def classify_dtype(text: str) -> str:
    """``"FP16"``, ``"FP32"``, ... from an inspector format/type string, else ``"unknown"``."""
    low = text.lower()
    return next((name for name, pat in _DTYPE_PATTERNS if pat.search(low)), "unknown")


def _tensor_dtype(tensor: Any) -> str:
    if not isinstance(tensor, Mapping):
        return "unknown"
    # TensorRT 10: "Format/Datatype"; TensorRT 11: "DataType" and "Format" apart.
    for field in ("DataType", "Format/Datatype", "Format/DataType", "Format"):
        value = tensor.get(field)
        if isinstance(value, str):
            kind = classify_dtype(value)
            if kind != "unknown":
                return kind
    return "unknown"


def layer_precisions(engine_info: Mapping[str, Any] | str) -> dict[str, Any]:
    """Per-layer precision from the engine inspector's JSON (``get_engine_information``).

    A layer's precision is that of its first output (else its first input). Returns
    ``{"counts": {precision: n}, "layers": [{"name", "type", "precision"}]}``; layers
    described by name only (built without detailed profiling verbosity) are ``unknown``.
    """
    info = json.loads(engine_info) if isinstance(engine_info, str) else engine_info
    layers = []
    for layer in info.get("Layers", []):
        if not isinstance(layer, Mapping):
            layers.append({"name": str(layer), "type": "unknown", "precision": "unknown"})
            continue
        precision = "unknown"
        for side in ("Outputs", "Inputs"):
            tensors = layer.get(side) or []
            if tensors:
                precision = _tensor_dtype(tensors[0])
                if precision != "unknown":
                    break
        layers.append(
            {
                "name": str(layer.get("Name", "?")),
                "type": str(layer.get("LayerType", "unknown")),
                "precision": precision,
            }
        )
    counts = Counter(entry["precision"] for entry in layers)
    return {"counts": dict(sorted(counts.items())), "layers": layers}


def check_precision(asked: str, precisions: Mapping[str, Any]) -> str | None:
    """An error for an ``fp16`` engine without FP16 layers; a warning when it cannot tell."""
    counts: Mapping[str, int] = precisions.get("counts", {})
    if asked != "fp16":
        return None
    if counts.get("FP16", 0) > 0:
        return None
    known = {k: v for k, v in counts.items() if k != "unknown"}
    if not known:
        return "warning: the engine inspector gave no layer precisions; fp16 is unverified"
    raise EngineError(
        f"tensorrt: asked for fp16, got an engine with no FP16 layers (layer precisions: {known})"
    )
