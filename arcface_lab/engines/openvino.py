"""OpenVINO: the CPU fast path (FP32, BF16, INT8 with accuracy-aware mixed precision).

Precisions:
    fp32: ``INFERENCE_PRECISION_HINT`` is set to ``f32`` explicitly. OpenVINO's CPU plugin
        defaults to ``bf16`` on CPUs with native BF16, which would make an "fp32" figure a
        BF16 one.
    bf16: hint ``bf16``, with the layers of ``fp32_layers`` (by default the stem
        convolution, the one that reads the image) kept in FP32. Refused on a CPU without
        native BF16 (OpenVINO would quietly run FP32 and the label would lie).
    int8: the model quantized by :mod:`arcface_lab.engines.openvino_int8` (calibrated on
        the validation images, the layers whose quantization hurts the embedding most kept
        in floating point), compiled with the ``bf16`` hint so the kept layers run in BF16
        (``f32`` on a CPU without native BF16) and ``fp32_layers`` in FP32. Offered only
        when it passes its gates.

``info.details.runtime_precisions`` counts the weighted layers the compiled model runs
in each precision, read back from the compiled model, not from the request.

Artifacts go through the engine store, so a second creation skips the work:
    ``openvino-int8``: a tar of the quantized IR (saved with ``compress_to_fp16=False``)
        and its search report.
    ``openvino-compiled``: ``CompiledModel.export_model()`` bytes, loaded back with
        ``Core.import_model``.

``info.details`` keeps first-run costs apart from steady-state latency: ``build_s``
(reading and converting the ONNX or stored IR), ``calibration_s`` (INT8 calibration),
``search_s`` (the INT8 precision search: sensitivity and verification), ``compile_s``,
``import_s`` (loading a stored compiled model) and ``load_s`` (the whole creation). A
step the store let this creation skip reads 0.0; ``int8.timings`` keeps what the INT8
build cost when it ran.

Options (``backends.options.openvino`` in a params file):
    threads: ``INFERENCE_NUM_THREADS`` (0, the default: OpenVINO's choice, every core).
    performance_hint: ``LATENCY`` (default: one stream, so a synchronous ``embed`` call
        uses every core) or ``THROUGHPUT``.
    cache_compiled: keep the compiled model in the store (default True).
    int8_cosine_min, int8_flips_max: the INT8 gates, required for ``int8`` (params:
        ``thresholds.cosine_min.int8`` and ``thresholds.decision_flips_max``).
    int8_enforce_gates: refuse an INT8 model that fails its gates (default True); False
        loads it anyway, with a warning, so it can be measured.
    int8_search: search which layers stay in BF16 (default True); False quantizes every
        layer and only measures the gates (what INT8 without accuracy control costs).
    fp32_layers: layers kept in FP32 under the ``bf16`` hint (see
        :mod:`arcface_lab.engines.ov_fp32`): ``input`` (default: the weighted layers that
        read the image), ``none``, or a list of layer names of the OpenVINO model.
    int8_margin: fraction of the cosine headroom left by the BF16-only model that the
        search may spend on INT8 error (default 0.3; the rest is margin for faces the
        search never saw: on seeded r50, 0.5 passed on the validation faces and missed
        0.999 on held-out ones, 0.3 passed both).
    calibration: the validation images INT8 is calibrated and gated on: ``synthetic:N``
        (the run's synthetic faces), a ``.npy`` file or folder, or a ``uint8`` array
        (default ``synthetic:64``, what ``params/default.yaml`` validates on).
    pairs: verification pairs for the decision-flip gate: ``synthetic:N``, ``.bin``,
        ``.csv`` or ``none`` (default ``synthetic:100``).
    flip: flip test-time augmentation for the pairs (default True, as the run does).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.config.fields import (
    Ctx,
    nullable,
    option,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_str,
)
from arcface_lab.data.images import SYNTHETIC_IMAGES
from arcface_lab.engines.base import Engine, Support
from arcface_lab.engines.openvino_int8 import int8_model, seconds
from arcface_lab.engines.ov_fp32 import FP32_OPTION, fp32_option
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["OpenVinoEngine"]

log = logging.getLogger(__name__)

_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _type_name(value: Any) -> str:
    get = getattr(value, "get_type_name", None)
    return str(get()) if callable(get) else str(value)


def _calibration_spec(value: Any, ctx: Ctx) -> Any:
    """``synthetic:N``, a ``.npy`` file or image folder, or a ``uint8`` array (checked later)."""
    return value if isinstance(value, np.ndarray) else parse_str(value, ctx)


def _pairs_spec(value: Any, ctx: Ctx) -> str | None:
    text = parse_str(value, ctx)
    return None if text.lower() == "none" else text


@dataclass(frozen=True)
class OpenVinoOptions:
    """``backends.options.openvino`` (see the module docstring for what each one does)."""

    threads: int = option(0, parse_int, "INFERENCE_NUM_THREADS (0: OpenVINO's choice)")
    performance_hint: str = option(
        "LATENCY", parse_choice("LATENCY", "THROUGHPUT", upper=True), "LATENCY or THROUGHPUT"
    )
    cache_compiled: bool = option(True, parse_bool, "keep the compiled model in the store")
    fp32_layers: str | list[str] = option(
        "input",
        lambda v, c: fp32_option(v, f"{c.source}: {c.path}"),
        "layers kept in FP32 under the bf16 hint: input, none or layer names",
    )
    int8_cosine_min: float | None = option(
        None, nullable(lambda v, c: parse_float(v, c, 0, 1, open_lo=True)), "INT8 cosine gate"
    )
    int8_flips_max: int | None = option(None, nullable(parse_int), "INT8 decision-flip gate")
    int8_enforce_gates: bool = option(True, parse_bool, "refuse an INT8 model failing its gates")
    int8_search: bool = option(True, parse_bool, "search which layers stay out of INT8")
    int8_margin: float = option(
        0.3,
        lambda v, c: parse_float(v, c, 0, 1, open_lo=True),
        "share of the BF16 model's cosine headroom the INT8 search may spend",
    )
    calibration: Any = option(
        f"synthetic:{SYNTHETIC_IMAGES}", _calibration_spec, "images INT8 is calibrated on"
    )
    pairs: str | None = option(
        "synthetic:100", nullable(_pairs_spec), "pairs of the decision-flip gate (none: no gate)"
    )
    flip: bool = option(True, parse_bool, "flip test-time augmentation for the pairs")


@register_backend
class OpenVinoEngine(Engine):
    """OpenVINO on the CPU over the canonical ONNX model."""

    name = "openvino"
    precisions = ("fp32", "bf16", "int8")
    description = "OpenVINO CPU: FP32, BF16, INT8 with accuracy-aware mixed precision"
    requires = (("openvino", "pip install openvino"),)
    Options = OpenVinoOptions
    # seeded r50, batch 32, 2 threads (docs/performance.md): Zen 4 fp32 1.9x, bf16 3.6x,
    # gated int8 3.7x, every layer int8 6.3x; Zen 3 (AVX2) fp32 floor 1.5x, int8 floor 2.7x.
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {
        ("cpu", "fp32"): 1.9,
        ("cpu", "bf16"): 3.6,
        ("cpu", "int8"): 3.7,
    }

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        cpu = host.cpu
        if precision == "bf16" and not cpu.native_bf16:
            return Support(
                "unavailable",
                f"this CPU has no native BF16 ({cpu.cls}: needs AVX512_BF16 or AMX); "
                "OpenVINO would run FP32 under a BF16 label",
            )
        if precision == "int8":
            if importlib.util.find_spec("nncf") is None:
                return Support("unavailable", "openvino int8 needs nncf: pip install nncf")
            if not cpu.vnni:
                return Support(
                    "native",
                    f"no VNNI ({cpu.cls}): 8-bit multiplies with 16-bit accumulation, so "
                    "NNCF's overflow fix quantizes the first layer's weights to 7 bits",
                )
        return Support("native")

    @classmethod
    def candidate_options(cls, precision: str, host: Host) -> list[tuple[dict[str, Any], float]]:
        """INT8 twice: with the accuracy-aware search, and on every layer (INT8's full speed)."""
        if precision != "int8":
            speedup = cls.expected_speedup[("cpu", precision)]
            return [({}, 1.5 if precision == "fp32" and not host.cpu.native_bf16 else speedup)]
        if host.cpu.native_bf16:
            return [({"int8_search": False}, 6.3), ({}, 3.7)]
        return [({"int8_search": False}, 2.7), ({}, 2.0)]

    # -- configuration -------------------------------------------------------------------

    def _config(self, native_bf16: bool) -> dict[str, Any]:
        hint = _HINTS.get(self.precision, "bf16" if native_bf16 else "f32")
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": self.opts.performance_hint,
        }
        if self.opts.threads:
            config["INFERENCE_NUM_THREADS"] = self.opts.threads
        return config

    def _compiled(
        self,
        core: Any,
        config: dict[str, Any],
        source_sha: str,
        read: Callable[[], Any],
        times: dict[str, float],
        fp32: str | list[str],
    ) -> Any:
        import openvino as ov

        from arcface_lab.store import device_fingerprint

        def compile_now() -> Any:
            t0 = time.perf_counter()
            model = read()
            times["build_s"] += seconds(t0)
            t0 = time.perf_counter()
            compiled = core.compile_model(model, "CPU", config)
            times["compile_s"] = seconds(t0)
            return compiled

        if not self.opts.cache_compiled:
            return compile_now()
        built: dict[str, Any] = {}

        def build(tmp: Path) -> dict[str, Any]:
            compiled = compile_now()
            blob = compiled.export_model()
            tmp.write_bytes(blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob))
            built["compiled"] = compiled
            return {"build_s": times["build_s"], "compile_s": times["compile_s"]}

        inputs = {
            "source_sha256": source_sha,
            "precision": self.precision,
            "fp32_layers": fp32,
            "config": {k: str(v) for k, v in sorted(config.items())},
            "library": {"openvino": ov.get_version()},
            "device": device_fingerprint(),
        }
        path = self._artifact("openvino-compiled", inputs, build)
        if "compiled" in built:
            return built["compiled"]
        t0 = time.perf_counter()
        compiled = core.import_model(path.read_bytes(), "CPU", config)
        times["import_s"] = seconds(t0)
        return compiled

    def _load(self) -> None:
        if self.device not in (None, "cpu"):
            raise BackendUnavailable(f"openvino: runs on the CPU here, not on {self.device!r}")
        import openvino as ov

        from arcface_lab.core.files import file_sha256
        from arcface_lab.core.host import probe
        from arcface_lab.engines.ov_fp32 import (
            keep_fp32,
            resolve_fp32_layers,
            runtime_precisions,
        )

        started = time.perf_counter()
        support = self.support(self.precision, probe(), "cpu")
        if not support.native:
            raise BackendUnavailable(f"openvino {self.precision}: {support.reason}")
        core = ov.Core()
        capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        native_bf16 = "BF16" in capabilities and probe().cpu.native_bf16
        if self.precision == "bf16" and not native_bf16:
            raise BackendUnavailable(
                "openvino bf16: this CPU has no native BF16 (OPTIMIZATION_CAPABILITIES: "
                f"{', '.join(capabilities)}); OpenVINO would run FP32"
            )
        config = self._config(native_bf16)
        times = {
            "build_s": 0.0,
            "calibration_s": 0.0,
            "search_s": 0.0,
            "compile_s": 0.0,
            "import_s": 0.0,
        }
        self.info.versions = {"openvino": ov.get_version()}
        # FP32 islands matter only where the hint is not f32 already.
        fp32: str | list[str] = "none"
        if config["INFERENCE_PRECISION_HINT"] != "f32":  # normalised: it is part of store keys
            fp32 = self.opts.fp32_layers
        if self.precision == "int8":
            source_sha, read = int8_model(self, core, config, fp32, times)
        else:
            onnx = self.model.onnx_path()
            source_sha = file_sha256(onnx)

            def read() -> Any:
                model = core.read_model(str(onnx))
                return keep_fp32(model, resolve_fp32_layers(model, fp32, FP32_OPTION), core)

        compiled = self._compiled(core, config, source_sha, read, times, fp32)
        self._compiled_model = compiled
        self._request = compiled.create_infer_request()
        self.info.device = "cpu"
        layers = runtime_precisions(compiled)
        self.info.details.update(
            inference_precision=_type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            performance_hint=str(compiled.get_property("PERFORMANCE_HINT")),
            threads=int(compiled.get_property("INFERENCE_NUM_THREADS")),
            native_bf16=native_bf16,
            fp32_layers=fp32,
            runtime_precisions={k: len(v) for k, v in layers.items()},
            runtime_fp32_layers=layers.get("f32", []) if fp32 != "none" else [],
            **times,
            load_s=seconds(started),
        )

    def _infer(self, x: np.ndarray) -> np.ndarray:
        result = self._request.infer({0: x})
        return np.array(result[0], dtype=np.float32, copy=True)

    def _close(self) -> None:
        del self._request
        del self._compiled_model
