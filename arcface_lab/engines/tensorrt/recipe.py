"""What a TensorRT build is made of: the profile, the recipe per TensorRT major, the key inputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from arcface_lab.errors import BackendUnavailable, InputError

#: The precisions a TensorRT engine is built in.
TRT_PRECISIONS = ("fp32", "fp16")
INSTALL_HINT = "pip install tensorrt"
DEFAULT_WORKSPACE_MB = 1024


# ------------------------------------------------------------------------------ pure steps
@dataclass(frozen=True)
class Profile:
    """One optimization profile over the batch axis."""

    min: int
    opt: int
    max: int

    def shapes(self, item_shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        """``(min, opt, max)`` input shapes for one item of shape ``item_shape``."""
        return tuple((b, *item_shape) for b in (self.min, self.opt, self.max))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_profile(
    batch_min: Any, batch_opt: Any, batch_max: Any, backend: str = "tensorrt"
) -> Profile:
    """Check ``1 <= batch_min <= batch_opt <= batch_max``; name the offending option.

    ``backend`` names whose options these are in the errors (``onnxruntime`` for its
    TensorRT execution provider).

    Raises:
        InputError: A value is not an integer, is below 1, or the order is wrong.
    """
    values = {"batch_min": batch_min, "batch_opt": batch_opt, "batch_max": batch_max}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{backend} option {name}: expected an integer >= 1, got {value!r}")
        if value < 1:
            raise InputError(f"{backend} option {name}: expected an integer >= 1, got {value}")
    if batch_min > batch_opt:
        raise InputError(
            f"{backend} option batch_opt: expected batch_min <= batch_opt <= batch_max, "
            f"got batch_min={batch_min} > batch_opt={batch_opt}"
        )
    if batch_opt > batch_max:
        raise InputError(
            f"{backend} option batch_max: expected batch_min <= batch_opt <= batch_max, "
            f"got batch_opt={batch_opt} > batch_max={batch_max}"
        )
    return Profile(int(batch_min), int(batch_opt), int(batch_max))


@dataclass(frozen=True)
class Recipe:
    """How one precision is built for one TensorRT major version."""

    precision: str
    trt_major: int
    #: ``"fp32"``: the canonical model; ``"fp16-io32"``: its FP16 copy with FP32 inputs/outputs.
    onnx: str
    #: ``NetworkDefinitionCreationFlag`` names set at network creation.
    network_flags: tuple[str, ...]
    #: ``BuilderFlag`` names set, and cleared, on the builder config.
    set_flags: tuple[str, ...]
    clear_flags: tuple[str, ...]

    @property
    def tf32(self) -> bool:
        return "TF32" in self.set_flags

    def describe(self) -> str:
        typing = "strongly typed" if "STRONGLY_TYPED" in self.network_flags else "weakly typed"
        onnx = "FP16 ONNX copy (FP32 I/O)" if self.onnx == "fp16-io32" else "FP32 ONNX"
        flags = ", ".join([f"+{f}" for f in self.set_flags] + [f"-{f}" for f in self.clear_flags])
        return f"TensorRT {self.trt_major}: {onnx}, {typing}, builder flags [{flags}]"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("network_flags", "set_flags", "clear_flags"):
            out[k] = list(out[k])
        return out


def choose_recipe(trt_major: int, precision: str, tf32: bool = False) -> Recipe:
    """The build recipe for ``precision`` on TensorRT ``trt_major``.

    TensorRT 10 builds the FP32 model and sets ``BuilderFlag.FP16`` for ``fp16``.
    TensorRT 11 removed that flag (every network is strongly typed), so ``fp16``
    builds an FP16 copy of the model with FP32 inputs/outputs. ``fp32`` sets no
    precision flag on either. ``TF32`` is set when ``tf32`` else cleared.

    Raises:
        BackendUnavailable: TensorRT older than 10, or a precision other than fp32/fp16.
    """
    if trt_major < 10:
        raise BackendUnavailable(
            f"tensorrt {trt_major}.x is too old: arcface_lab needs TensorRT >= 10 ({INSTALL_HINT})"
        )
    if precision not in TRT_PRECISIONS:
        raise BackendUnavailable(
            f"tensorrt: precision {precision!r} not supported "
            f"(supported: {', '.join(TRT_PRECISIONS)})"
        )
    tf32_set, tf32_clear = (("TF32",), ()) if tf32 else ((), ("TF32",))
    if trt_major == 10:
        fp16_flag = ("FP16",) if precision == "fp16" else ()
        return Recipe(precision, trt_major, "fp32", (), fp16_flag + tf32_set, tf32_clear)
    onnx = "fp16-io32" if precision == "fp16" else "fp32"
    return Recipe(precision, trt_major, onnx, ("STRONGLY_TYPED",), tf32_set, tf32_clear)


def artifact_inputs(
    *,
    onnx_sha256: str,
    recipe: Recipe,
    profile: Profile,
    trt_version: str,
    device: Mapping[str, Any],
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    hardware_compatibility: bool = False,
    converter_version: str | None = None,
) -> dict[str, Any]:
    """Everything that makes a TensorRT plan valid: the engine store's key inputs.

    ``device`` is :func:`arcface_lab.store.device_fingerprint` (GPU name and compute
    capability). ``converter_version`` (onnxconverter-common) matters only for recipes
    that build from an FP16 ONNX copy.
    """
    library = {"tensorrt": trt_version}
    if recipe.onnx == "fp16-io32":
        library["onnxconverter-common"] = converter_version or "unknown"
    return {
        "backend": "tensorrt",
        "onnx_sha256": onnx_sha256,
        "precision": recipe.precision,
        "recipe": recipe.to_dict(),
        "profile": profile.to_dict(),
        "library": library,
        "device": dict(device),
        "flags": {
            "tf32": recipe.tf32,
            "hardware_compatibility": bool(hardware_compatibility),
            "workspace_mb": int(workspace_mb),
        },
    }
