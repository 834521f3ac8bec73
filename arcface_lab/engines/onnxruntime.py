"""ONNX Runtime: CPU, CUDA and TensorRT execution providers.

``fp16`` runs an FP16 copy of the canonical model whose inputs and outputs
stay FP32. On the CPU provider that is *not* FP16 arithmetic: ONNX Runtime
casts each node back to FP32 on CPUs without native FP16, so it measures
weight rounding only (recorded as a warning).

Options:
    providers: ``"auto"`` (default: CUDA then CPU when a GPU build is present),
        or a comma-separated list of ``cpu``, ``cuda``, ``tensorrt``.
    batch_min, batch_opt, batch_max: the TensorRT provider's optimization profile.

Built artifacts go through the engine store: the FP16 copy, the CPU-optimized
graph (``ORT_ENABLE_EXTENDED``), and with the TensorRT provider first, the
engine it built embedded in an EP context model.
    threads: intra-op threads (0: ONNX Runtime's default).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.config.fields import Ctx, option, parse_int, parse_str
from arcface_lab.engines.base import Engine, Support, own_kernels
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable, EngineError, InputError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["OnnxRuntimeEngine"]

log = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _providers(value: Any, ctx: Ctx) -> tuple[str, ...]:
    """``auto`` (empty), or provider names (``cpu``, ``cuda``, ``tensorrt``) in order."""
    names = [p.strip().lower() for p in parse_str(value, ctx).split(",") if p.strip()]
    if names == ["auto"]:
        return ()
    unknown = [p for p in names if p not in _PROVIDERS]
    if unknown or not names:
        raise ctx.error(f"auto or a comma-separated list of {', '.join(_PROVIDERS)}", value)
    return tuple(names)


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """``backends.options.onnxruntime``."""

    providers: tuple[str, ...] = option(
        (), _providers, "execution providers in order; () is auto: CUDA when asked for, else CPU"
    )
    threads: int = option(0, parse_int, "intra-op threads (0: ONNX Runtime's choice)")


@register_backend
class OnnxRuntimeEngine(Engine):
    """ONNX Runtime over the canonical ONNX model (FP32, or an FP16 copy with FP32 I/O)."""

    name = "onnxruntime"
    precisions = ("fp32", "fp16")
    description = "ONNX Runtime (CPU, CUDA, TensorRT execution providers)"
    requires = (("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)"),)
    Options = OnnxRuntimeOptions
    devices = ("cpu", "cuda")
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {
        ("cpu", "fp32"): 1.5,
        ("cuda", "fp32"): 1.2,
        ("cuda", "fp16"): 4.0,
    }

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        if kind == "cpu":
            if precision == "fp16":
                return Support(
                    "emulated",
                    "ONNX Runtime's CPU provider casts every FP16 node back to FP32: slower than "
                    "FP32, and no FP16 arithmetic (it measures weight rounding only)",
                )
            return own_kernels(host, "MLAS kernels")
        import onnxruntime as ort

        if _PROVIDERS["cuda"] not in ort.get_available_providers():
            return Support("unavailable", "no CUDAExecutionProvider: pip install onnxruntime-gpu")
        return Support("native")

    def _provider_list(self, available: list[str]) -> list[Any]:
        names = list(self.opts.providers)
        if not names:
            names = ["cpu"]
            if self.device != "cpu" and _PROVIDERS["cuda"] in available:
                names = ["cuda", "cpu"]
        missing = [p for p in names if _PROVIDERS[p] not in available]
        if missing:
            raise BackendUnavailable(
                f"onnxruntime: execution provider(s) {', '.join(missing)} not in this build "
                f"(available: {', '.join(available)})"
            )
        providers: list[Any] = []
        for p in names:
            if p == "tensorrt":
                providers.append((_PROVIDERS[p], self._trt_options()))
            elif p == "cuda":
                # device_id: cuda:N means GPU N. use_tf32 off at fp32: strict FP32, as the
                # torch reference (the CUDA EP allows TF32 by default).
                cuda = {
                    "device_id": self._device_index(),
                    "use_tf32": int(self.precision != "fp32"),
                }
                providers.append((_PROVIDERS[p], cuda))
            else:
                providers.append(_PROVIDERS[p])
        return providers

    def _device_index(self) -> int:
        """N of ``cuda:N`` (0 for ``cuda`` or no device)."""
        device = str(self.device or "cuda")
        if device in ("cuda", "cpu"):
            return 0
        head, _, index = device.partition(":")
        if head != "cuda" or not index.isdigit():
            raise InputError(f"onnxruntime device {device!r}: expected cpu, cuda or cuda:N")
        return int(index)

    def _model_path(self) -> str:
        """The canonical FP32 model, or its FP16 copy built once through the engine store."""
        from arcface_lab.core.files import file_sha256
        from arcface_lab.models.onnx_io import check_self_contained, fp16_copy

        fp32 = self.model.onnx_path()
        if self.precision == "fp32":
            return str(fp32)
        try:
            converter = version("onnxconverter-common")
        except PackageNotFoundError:
            raise BackendUnavailable(
                "onnxruntime fp16 needs 'onnxconverter-common': pip install onnxconverter-common"
            ) from None

        def build(tmp: Path) -> None:
            fp16_copy(fp32, tmp)
            check_self_contained(tmp, "onnxruntime fp16")

        inputs = {
            "onnx_sha256": file_sha256(fp32),
            "precision": "fp16",
            "recipe": "onnxconverter-common float16, keep_io_types=True",
            "library": {"onnxconverter-common": converter},
        }
        return str(self._artifact("onnx-fp16", inputs, build, main=False))

    def _trt_options(self) -> dict[str, Any]:
        """TensorRT EP options: precision and one dynamic-batch optimization profile."""
        from arcface_lab.engines.tensorrt import parse_profile

        name = self.model.onnx_info().input_name
        item = "x".join(str(d) for d in self.model.preprocess.input_shape(1)[1:])
        lo, opt, hi = (self.options.get(k) for k in ("batch_min", "batch_opt", "batch_max"))
        lo = 1 if lo is None else lo
        if hi is None:
            hi = max(self.batch_size, opt) if isinstance(opt, int) else self.batch_size
        if opt is None:
            opt = min(self.batch_size, hi) if isinstance(hi, int) else self.batch_size
        # An EPContext engine is never rebuilt: a batch outside the profile fails at run time.
        profile = parse_profile(lo, opt, hi, backend="onnxruntime")
        if self.batch_size > profile.max:
            raise InputError(
                f"onnxruntime option batch_max: {profile.max} is below the engine's batch_size "
                f"{self.batch_size}; the TensorRT EP engine could not run such a batch"
            )
        return {
            "device_id": self._device_index(),
            "trt_fp16_enable": self.precision == "fp16",
            "trt_profile_min_shapes": f"{name}:{profile.min}x{item}",
            "trt_profile_opt_shapes": f"{name}:{profile.opt}x{item}",
            "trt_profile_max_shapes": f"{name}:{profile.max}x{item}",
        }

    def _trt_context_model(self, ort: Any, source: str, providers: list[Any]) -> str:
        """The TensorRT EP's built engine, embedded in an EPContext ONNX model, via the store.

        ONNX Runtime writes the engine it built into a single "EP context" model
        (``trt_dump_ep_context_model``, embed mode 1); that file is the artifact, so a
        second run (or another machine with the same GPU) loads it instead of rebuilding.
        """
        from arcface_lab.core.files import file_sha256
        from arcface_lab.store import device_fingerprint

        trt_opts = dict(providers[0][1])

        def build(tmp: Path) -> None:
            with tempfile.TemporaryDirectory(dir=tmp.parent) as work:
                ctx = Path(work) / "model_ctx.onnx"
                dump = {
                    **trt_opts,
                    "trt_dump_ep_context_model": True,
                    "trt_ep_context_file_path": str(ctx),
                    "trt_ep_context_embed_mode": 1,
                }
                opts = ort.SessionOptions()
                opts.log_severity_level = 3
                session = ort.InferenceSession(source, opts, providers=[(providers[0][0], dump)])
                if providers[0][0] not in session.get_providers():
                    # ONNX Runtime prints the provider's error and retries without it.
                    raise EngineError(
                        "onnxruntime: the TensorRT execution provider failed to build an engine "
                        f"for {source} (session providers: {session.get_providers()}); run with "
                        "log_severity_level 0-2 to see TensorRT's error"
                    )
                if not ctx.is_file():
                    raise EngineError(f"onnxruntime TensorRT EP wrote no EP context model at {ctx}")
                os.replace(ctx, tmp)

        inputs = {
            "onnx_sha256": file_sha256(source),
            "precision": self.precision,
            "provider_options": trt_opts,
            "library": {"onnxruntime": ort.__version__, "tensorrt": _tensorrt_version()},
            "device": device_fingerprint(),
        }
        return str(self._artifact("ort-trt-epcontext", inputs, build))

    def _optimized(self, ort: Any, source: str) -> str:
        """The CPU-optimized graph (ORT_ENABLE_EXTENDED fusions), built once via the store."""
        from arcface_lab.core.files import file_sha256
        from arcface_lab.models.onnx_io import check_self_contained
        from arcface_lab.store import device_fingerprint

        def build(tmp: Path) -> None:
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            opts.optimized_model_filepath = str(tmp)
            opts.log_severity_level = 3
            ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
            check_self_contained(tmp, "onnxruntime optimized graph")

        inputs = {
            "onnx_sha256": file_sha256(source),
            "precision": self.precision,
            "level": "ORT_ENABLE_EXTENDED",
            "providers": ["CPUExecutionProvider"],
            "library": {"onnxruntime": ort.__version__},
            "device": device_fingerprint(),
        }
        return str(self._artifact("ort-optimized", inputs, build))

    def _load(self) -> None:
        import onnxruntime as ort

        providers = self._provider_list(ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = self.opts.threads
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        model_path = self._model_path()
        if providers == ["CPUExecutionProvider"]:
            model_path = self._optimized(ort, model_path)
        elif isinstance(providers[0], tuple) and providers[0][0] == _PROVIDERS["tensorrt"]:
            model_path = self._trt_context_model(ort, model_path, providers)
        self._session = ort.InferenceSession(model_path, opts, providers=providers)
        used = self._session.get_providers()
        asked = [p if isinstance(p, str) else p[0] for p in providers]
        dropped = [p for p in asked if p not in used]
        if dropped:
            msg = f"onnxruntime dropped {', '.join(dropped)} at session creation; ran on {used[0]}"
            log.warning(msg)
            self.info.warnings.append(msg)
        self._input = self._session.get_inputs()[0].name
        on_gpu = used[0] != "CPUExecutionProvider"
        self.info.device = f"cuda:{self._device_index()}" if on_gpu else "cpu"
        self.info.versions = {"onnxruntime": ort.__version__}
        self.info.details.update(providers=used, threads=threads or "default")
        if self.precision == "fp16" and used[0] == "CPUExecutionProvider":
            self.info.warnings.append(
                "fp16 on the CPU execution provider: ONNX Runtime casts back to fp32 per node; "
                "this measures weight rounding only, not fp16 arithmetic"
            )

    def _infer(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._session.run(None, {self._input: x})[0]
        return out

    def _close(self) -> None:
        del self._session


def _tensorrt_version() -> str:
    """The TensorRT the EP loads, as far as Python can tell (its engines are tied to it)."""
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"
