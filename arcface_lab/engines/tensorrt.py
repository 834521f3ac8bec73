"""Native TensorRT: a plan built from the canonical ONNX model, cached, run by ``execute_async_v3``.

Building is a chain of small steps, each testable on its own (the shape of
Polygraphy's ``NetworkFromOnnxPath -> EngineBytesFromNetwork -> EngineFromBytes``):

1. :func:`parse_profile` checks the optimization profile (min/opt/max batch);
2. :func:`choose_recipe` decides how a precision is built for a TensorRT major version:

   - TensorRT 10: the FP32 ONNX model; ``fp16`` sets ``BuilderFlag.FP16`` (weak typing);
   - TensorRT 11 and newer: every network is strongly typed and the precision flags are
     gone, so ``fp16`` builds an FP16 copy of the ONNX model whose inputs and outputs
     stay FP32 (:func:`~arcface_lab.models.onnx_io.fp16_copy`);
   - ``BuilderFlag.TF32`` is cleared unless the ``tf32`` option asks for it, so ``fp32``
     is a strict FP32 baseline;

3. :func:`artifact_inputs` lists everything that makes a plan valid (its store key);
4. the plan is built with ``Builder.build_serialized_network`` (a timing cache kept in
   the engine store beside it), stored through the engine store (verified by sha256
   before every deserialization) and deserialized with ``Runtime.deserialize_cuda_engine``;
5. :func:`layer_precisions` reads the engine inspector's JSON: an engine asked for
   ``fp16`` with no FP16 layer is an error, never a silent FP32 engine.

``tensorrt`` and ``torch`` (CUDA build; its tensors are the device buffers and its
streams the CUDA streams) are imported only when an engine is created.

Options (``backends.options.tensorrt`` in a params file):
    batch_min, batch_opt, batch_max: the optimization profile (default 1,
        ``min(32, batch_size)``, ``batch_size``); the engine's batch size is capped at
        ``batch_max`` and larger batches are split.
    workspace_mb: builder workspace memory pool limit (default 1024).
    tf32: allow TF32 for FP32 layers (default False: strict FP32).
    hardware_compatibility: build an Ampere+ hardware-compatible plan (default False).
    timing_cache: keep a timing cache in the engine store (default True).
    store: an :class:`~arcface_lab.store.EngineStore` (default: local, under the model cache).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.config.fields import option, parse_bool, parse_int
from arcface_lab.engines.base import Engine, Support
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable, EngineError, InputError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = [
    "Profile",
    "Recipe",
    "TensorRTEngine",
    "artifact_inputs",
    "check_precision",
    "choose_recipe",
    "classify_dtype",
    "layer_precisions",
    "parse_profile",
]

log = logging.getLogger(__name__)

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
    if precision not in TensorRTEngine.precisions:
        raise BackendUnavailable(
            f"tensorrt: precision {precision!r} not supported "
            f"(supported: {', '.join(TensorRTEngine.precisions)})"
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


# ------------------------------------------------------------------------------ TensorRT glue
def _import_trt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed: {INSTALL_HINT} ({exc})") from None
    except OSError as exc:  # the wheel is there, its CUDA libraries are not
        raise BackendUnavailable(f"tensorrt cannot load its libraries: {exc}") from None
    return trt


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


_LOGGER: Any = None


def _logger(trt: Any) -> Any:
    """One process-wide TensorRT logger (TensorRT wants one) that keeps the last errors."""
    global _LOGGER
    if _LOGGER is None:

        class CapturingLogger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: Any, msg: str) -> None:
                sev = trt.ILogger.Severity
                if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                    self.errors = [*self.errors[-19:], str(msg)]
                    log.error("TensorRT: %s", msg)
                elif severity == sev.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        _LOGGER = CapturingLogger()
    return _LOGGER


def _last_errors(logger: Any, n: int = 5) -> str:
    errors = list(getattr(logger, "errors", []))[-n:]
    return "; ".join(errors) if errors else "the TensorRT logger recorded no error"


def _parser_error(err: Any) -> str:
    def get(name: str) -> Any:
        fn = getattr(err, name, None)
        try:
            return fn() if callable(fn) else None
        except Exception:  # an accessor this TensorRT version lacks or refuses
            return None

    node, name, op = get("node"), get("node_name"), get("node_operator")
    where = f"node {node}" if node is not None and node >= 0 else "graph"
    if name:
        where += f" {name!r}"
    if op:
        where += f" ({op})"
    return f"{where}: {get('desc') or err} [{get('code')}]"


def _enum(owner: Any, name: str, what: str) -> Any:
    value = getattr(owner, name, None)
    if value is None:
        raise EngineError(f"tensorrt: this TensorRT has no {what}.{name}; rebuild the recipe")
    return value


@dataclass
class _BuildSettings:
    onnx_path: Path
    recipe: Recipe
    profile: Profile
    workspace_mb: int
    hardware_compatibility: bool


def build_plan(
    trt: Any, settings: _BuildSettings, timing_cache: bytes | None
) -> tuple[bytes, bytes, dict[str, Any]]:
    """Parse the ONNX file, configure the builder, build: ``(plan, timing cache, details)``.

    Raises:
        EngineError: The parser reported errors (each listed with its node), or the
            builder returned no plan (with the logger's last errors).
    """
    logger = _logger(trt)
    logger.errors = []
    builder = trt.Builder(logger)
    flags = 0
    for name in settings.recipe.network_flags:
        flag = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if flag is not None:  # TensorRT 11 is strongly typed whether or not the flag exists
            flags |= 1 << int(flag)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(settings.onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(
            f"tensorrt: cannot parse {settings.onnx_path} ({len(errors)} error(s)): "
            + "; ".join(errors or [_last_errors(logger)])
        )
    if network.num_inputs != 1:
        raise EngineError(f"tensorrt: expected one network input, got {network.num_inputs}")
    inp = network.get_input(0)
    item_shape = tuple(int(d) for d in inp.shape)[1:]
    if any(d < 1 for d in item_shape):
        raise EngineError(
            f"tensorrt: input {inp.name!r} has shape {tuple(inp.shape)}; only the batch axis "
            "may be dynamic"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    for name in settings.recipe.set_flags:
        config.set_flag(_enum(trt.BuilderFlag, name, "BuilderFlag"))
    for name in settings.recipe.clear_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is not None:
            config.clear_flag(flag)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if settings.hardware_compatibility:
        config.hardware_compatibility_level = _enum(
            trt.HardwareCompatibilityLevel, "AMPERE_PLUS", "HardwareCompatibilityLevel"
        )
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, *settings.profile.shapes(item_shape))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache or b"")
    reused = bool(timing_cache) and bool(config.set_timing_cache(cache, False))
    if not reused:
        if timing_cache:  # rejected (another TensorRT, device or flags): start an empty one
            log.warning("tensorrt: the stored timing cache was rejected; building without it")
            logger.errors = []
            cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(
            f"tensorrt: build_serialized_network returned no plan for {settings.onnx_path} "
            f"({settings.recipe.describe()}): {_last_errors(logger)}"
        )
    details = {
        "build_s": round(time.perf_counter() - started, 3),
        "timing_cache_reused": reused,
        "timing_cache_rejected": bool(timing_cache) and not reused,
    }
    return bytes(plan), bytes(config.get_timing_cache().serialize()), details


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
    }
    if dtype not in table:
        raise EngineError(f"tensorrt: unsupported I/O tensor type {dtype}")
    return table[dtype]


# ------------------------------------------------------------------------------ the engine
@dataclass(frozen=True)
class TensorRTOptions:
    """``backends.options.tensorrt`` (the profile's ``batch_min/opt/max`` are common options)."""

    workspace_mb: int = option(
        DEFAULT_WORKSPACE_MB, lambda v, c: parse_int(v, c, 1), "builder workspace pool limit (MiB)"
    )
    tf32: bool = option(False, parse_bool, "allow TF32 for FP32 layers (false: strict FP32)")
    hardware_compatibility: bool = option(
        False, parse_bool, "build an Ampere+ hardware-compatible plan"
    )
    timing_cache: bool = option(True, parse_bool, "keep a timing cache in the engine store")


@register_backend
class TensorRTEngine(Engine):
    """A TensorRT plan built from the canonical ONNX model, run on CUDA with torch buffers."""

    name = "tensorrt"
    precisions = ("fp32", "fp16")
    description = "native TensorRT (10.x builder flag, 11.x strongly typed), CUDA only"
    requires = (
        ("tensorrt", INSTALL_HINT),
        ("torch", "pip install torch (a CUDA build: its tensors are the device buffers)"),
    )
    Options = TensorRTOptions
    devices = ("cuda",)
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {
        ("cuda", "fp32"): 3.0,
        ("cuda", "fp16"): 8.0,
    }

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        major, minor = host.gpus[0].capability
        if (major, minor) < (7, 5):
            return Support(
                "unavailable",
                "TensorRT 10 supports compute capability 7.5 and newer, "
                f"this GPU is {major}.{minor}",
            )
        return Support("native")

    @classmethod
    def availability(cls) -> str | None:
        reason = super().availability()
        if reason is not None:
            return reason
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device: torch.cuda.is_available() is False"
        return None

    # -- options ----------------------------------------------------------------------------

    def _settings(self) -> tuple[Profile, int, bool, bool, bool]:
        opts = self.options
        batch_max = opts.get("batch_max", self.batch_size)
        batch_min = opts.get("batch_min", 1)
        default_opt = 1
        if isinstance(batch_max, int) and isinstance(batch_min, int):
            default_opt = max(batch_min, min(32, batch_max))  # never below batch_min
        batch_opt = opts.get("batch_opt", default_opt)
        profile = parse_profile(batch_min, batch_opt, batch_max)
        own = self.opts
        return profile, own.workspace_mb, own.tf32, own.hardware_compatibility, own.timing_cache

    # -- build ------------------------------------------------------------------------------

    def _load(self) -> None:
        from arcface_lab.core.files import file_sha256
        from arcface_lab.engines.torch_ref import torch_device
        from arcface_lab.store import device_fingerprint

        trt = _import_trt()
        import torch

        self.device = torch_device(self.device or "cuda")
        if not self.device.startswith("cuda"):
            raise BackendUnavailable(
                f"tensorrt runs on CUDA devices only; got device {self.device!r}"
            )
        self._torch, self._trt = torch, trt
        profile, workspace_mb, tf32, hw_compat, use_cache = self._settings()
        if self.batch_size > profile.max:
            self.info.warnings.append(
                f"batch_size {self.batch_size} capped at the profile's batch_max {profile.max}"
            )
            self.batch_size = profile.max
        self._profile = profile
        recipe = choose_recipe(_trt_major(trt), self.precision, tf32)
        converter = _converter_version() if recipe.onnx == "fp16-io32" else None

        with torch.cuda.device(self.device):
            fingerprint = device_fingerprint()
            onnx_path = self.model.onnx_path()
            inputs = artifact_inputs(
                onnx_sha256=file_sha256(onnx_path),
                recipe=recipe,
                profile=profile,
                trt_version=str(trt.__version__),
                device=fingerprint,
                workspace_mb=workspace_mb,
                hardware_compatibility=hw_compat,
                converter_version=converter,
            )
            settings = _BuildSettings(onnx_path, recipe, profile, workspace_mb, hw_compat)
            build_details: dict[str, Any] = {}

            def build(tmp: Path) -> dict[str, Any]:
                with self._network_onnx(settings) as network_settings:
                    plan, details = self._build_with_cache(trt, network_settings, inputs, use_cache)
                tmp.write_bytes(plan)
                build_details.update(details)
                return details

            plan_path = self._artifact("tensorrt-plan", inputs, build)
            self._start(trt, torch, plan_path.read_bytes())
        self.info.device = self.device
        self.info.versions = {"tensorrt": str(trt.__version__), "torch": torch.__version__}
        self.info.details.update(
            recipe=recipe.to_dict(),
            recipe_text=recipe.describe(),
            profile=profile.to_dict(),
            workspace_mb=workspace_mb,
            tf32=tf32,
            hardware_compatibility=hw_compat,
            gpu=torch.cuda.get_device_name(self.device),
            build=build_details or None,
        )
        message = check_precision(self.precision, self.info.details["layer_precisions"])
        if message:
            self.info.warnings.append(message)

    @contextlib.contextmanager
    def _network_onnx(self, settings: _BuildSettings) -> Iterator[_BuildSettings]:
        """The settings with the ONNX file the recipe builds from (an FP16 copy if asked)."""
        if settings.recipe.onnx != "fp16-io32":
            yield settings
            return
        from dataclasses import replace

        from arcface_lab.models.onnx_io import fp16_copy

        with tempfile.TemporaryDirectory(prefix="arcface-trt-") as tmp:
            half = fp16_copy(settings.onnx_path, Path(tmp) / "model-fp16.onnx")
            yield replace(settings, onnx_path=half)

    def _build_with_cache(
        self, trt: Any, settings: _BuildSettings, plan_inputs: Mapping[str, Any], use_cache: bool
    ) -> tuple[bytes, dict[str, Any]]:
        """Build with the stored timing cache; the first build on a device creates it."""
        if not use_cache:
            plan, _, details = build_plan(trt, settings, None)
            return plan, details
        cache_inputs = {
            "onnx_sha256": plan_inputs["onnx_sha256"],
            "recipe": plan_inputs["recipe"],
            "library": plan_inputs["library"],
            "device": plan_inputs["device"],
            "flags": plan_inputs["flags"],  # tf32, hardware compatibility: they change tactics
        }
        first: dict[str, Any] = {}

        def build_cache(tmp: Path) -> None:
            plan, cache, details = build_plan(trt, settings, None)
            first.update(plan=plan, details=details)
            tmp.write_bytes(cache)

        cache_path = self._artifact("tensorrt-timing-cache", cache_inputs, build_cache, main=False)
        if "plan" in first:
            return first["plan"], first["details"]
        plan, _, details = build_plan(trt, settings, cache_path.read_bytes())
        return plan, details

    def _start(self, trt: Any, torch: Any, plan: bytes) -> None:
        """Deserialize the verified plan, inspect it, create the context and the stream."""
        logger = _logger(trt)
        logger.errors = []
        self._runtime = trt.Runtime(logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(
                f"tensorrt: deserialize_cuda_engine returned None for artifact "
                f"{(self.info.artifact or {}).get('key')}: {_last_errors(logger)}"
            )
        self._engine = engine
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"tensorrt: create_execution_context failed: {_last_errors(logger)}")
        self._context = context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise EngineError(f"tensorrt: expected one input and one output, got {ins} / {outs}")
        self._in, self._out = ins[0], outs[0]
        self._in_dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(self._in))
        self._out_dtype = _torch_dtype(trt, torch, engine.get_tensor_dtype(self._out))
        self._stream = torch.cuda.Stream(device=self.device)
        self._lock = threading.Lock()

        # With a dynamic batch axis the inspector shows layer formats only for a context
        # whose input shape is set; without one every layer reads "N/A due to dynamic shapes".
        opt_shape = (self._profile.opt, *tuple(engine.get_tensor_shape(self._in))[1:])
        if not context.set_input_shape(self._in, opt_shape):
            raise EngineError(
                f"tensorrt: cannot set the input shape {opt_shape} for the engine inspector: "
                f"{_last_errors(logger)}"
            )
        inspector = engine.create_engine_inspector()
        inspector.execution_context = context
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        try:
            precisions = layer_precisions(text)
        except (ValueError, AttributeError) as exc:
            precisions = {"counts": {}, "layers": [], "error": f"unreadable inspector JSON: {exc}"}
        memory = getattr(engine, "device_memory_size_v2", None)
        if memory is None:
            memory = getattr(engine, "device_memory_size", None)
        self.info.details.update(
            layer_precisions=precisions,
            num_layers=int(engine.num_layers),
            engine_device_memory_mb=None if memory is None else round(int(memory) / 2**20, 2),
            io={"input": self._in, "output": self._out},
        )

    # -- run --------------------------------------------------------------------------------

    def _infer(self, x: np.ndarray) -> np.ndarray:
        n, top = x.shape[0], self._profile.max
        if n > top:  # embed(batch_size=...) may ask for more than the profile allows
            return np.concatenate([self._infer(x[i : i + top]) for i in range(0, n, top)])
        if n < self._profile.min:  # pad with copies of the last row; drop them after
            pad = np.repeat(x[-1:], self._profile.min - n, axis=0)
            return self._infer(np.concatenate([x, pad]))[:n]
        torch = self._torch
        # One execution context: shape, addresses and launch must not interleave across threads.
        with self._lock, torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            _logger(self._trt).errors = []  # so a failure quotes its own errors only
            inp = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._in_dtype)
            if not self._context.set_input_shape(self._in, tuple(inp.shape)):
                raise EngineError(
                    f"tensorrt: input shape {tuple(inp.shape)} is outside the profile "
                    f"{self._profile.to_dict()}"
                )
            shape = tuple(self._context.get_tensor_shape(self._out))
            out = torch.empty(shape, dtype=self._out_dtype, device=self.device)
            self._context.set_tensor_address(self._in, inp.data_ptr())
            self._context.set_tensor_address(self._out, out.data_ptr())
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineError(
                    f"tensorrt: execute_async_v3 failed: {_last_errors(_logger(self._trt))}"
                )
            result = out.float().cpu()
        self._stream.synchronize()
        self.info.details["torch_max_memory_allocated_mb"] = round(
            torch.cuda.max_memory_allocated(self.device) / 2**20, 2
        )
        arr: np.ndarray = result.numpy()
        return arr

    def _close(self) -> None:
        self._stream.synchronize()
        del self._context, self._engine, self._runtime


def _converter_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxconverter-common")
    except PackageNotFoundError:
        raise BackendUnavailable(
            "tensorrt fp16 on TensorRT >= 11 builds an FP16 ONNX copy with "
            "'onnxconverter-common': pip install onnxconverter-common"
        ) from None
