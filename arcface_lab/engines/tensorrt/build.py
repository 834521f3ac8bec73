"""TensorRT glue: import, logger, ONNX parsing and the plan build (with its timing cache)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcface_lab.engines.tensorrt.recipe import INSTALL_HINT, Profile, Recipe
from arcface_lab.errors import BackendUnavailable, EngineError

log = logging.getLogger(__name__)


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
