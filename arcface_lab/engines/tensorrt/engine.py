"""The tensorrt backend: a plan from the store, run on CUDA with torch buffers."""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.config.fields import option, parse_bool, parse_int
from arcface_lab.engines.base import Engine, Support
from arcface_lab.engines.registry import register_backend
from arcface_lab.engines.tensorrt.build import (
    _BuildSettings,
    _import_trt,
    _last_errors,
    _logger,
    _torch_dtype,
    _trt_major,
    build_plan,
)
from arcface_lab.engines.tensorrt.inspection import check_precision, layer_precisions
from arcface_lab.engines.tensorrt.recipe import (
    DEFAULT_WORKSPACE_MB,
    INSTALL_HINT,
    TRT_PRECISIONS,
    Profile,
    artifact_inputs,
    choose_recipe,
    parse_profile,
)
from arcface_lab.errors import BackendUnavailable, EngineError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host


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
    precisions = TRT_PRECISIONS
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
