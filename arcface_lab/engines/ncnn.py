"""ncnn: FP32 with Winograd 3x3 convolution, on the model converted by pnnx.

Why it is here: on AVX2 CPUs oneDNN and OpenVINO run only direct convolution, and 92 %
of iresnet r50's multiply-adds are 3x3 stride-1 convolutions, which ncnn computes with
Winograd F(6,3)/F(4,3)/F(2,3) at an FP32 error of about 1e-6 per layer (see
docs/performance.md).

FP32, honestly: fp16 and bf16 packing, storage and arithmetic are switched off (ncnn
turns them on by default where the CPU has them), Vulkan is off, and ``info.details``
records the settings the net ran with.

Conversion (the ``ncnn-model`` artifact): ``pnnx`` (a static binary shipped in the
``pnnx`` wheel; install it with ``pip install --no-deps pnnx`` so that it pulls no other
torch) converts the canonical ONNX with ``fp16=0`` in a subprocess with a timeout. The
``.param`` and ``.bin`` are kept as one tar in the engine store, keyed by the ONNX
sha256, the pnnx and ncnn versions and the conversion flags; the store checks its sha256
before it is read. Every layer type of the ``.param`` is checked against the ncnn
installed here before the artifact is stored, so an operator ncnn lacks is a
:class:`~arcface_lab.errors.ConversionError` naming it, not a crash at load time.

Batching: ncnn's convolutions take one image at a time; ``_infer`` runs one extractor
per face in order (``info.details["batching"]`` says so) and parallelism is ncnn's own
``num_threads``.

Options (``backends.options.ncnn``):
    threads: ``opt.num_threads`` (0, the default: the cores this process may use).
    winograd: Winograd convolution (default True; False measures what it brings).
    convert_timeout_s: seconds pnnx may take (default 600).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from arcface_lab.config.fields import option, parse_bool
from arcface_lab.core.files import read_tar_members, write_tar
from arcface_lab.engines.base import Engine, Support, own_kernels
from arcface_lab.engines.converters import (
    convert_timeout_option,
    onnx_for_converter,
    run_converter,
    threads_option,
    unsupported,
)
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable, ConversionError, EngineError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["NcnnEngine", "ncnn_from_onnx", "pnnx_executable"]

log = logging.getLogger(__name__)

#: The flags pnnx converts with (part of the artifact's key): FP32 weights.
PNNX_FLAGS = ("fp16=0", "optlevel=2")
_MEMBERS = ("model.ncnn.param", "model.ncnn.bin")


def pnnx_executable() -> Path:
    """The pnnx binary of the installed ``pnnx`` wheel, found without importing it.

    (``import pnnx`` imports torch; the converter itself is a static binary.)
    """
    spec = importlib.util.find_spec("pnnx")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        exe = Path(folder) / "pnnx"
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    raise BackendUnavailable(
        "ncnn: the pnnx converter is not installed: pip install --no-deps pnnx"
    )


def param_layer_types(param: str) -> list[tuple[str, str]]:
    """``(type, name)`` of every layer of an ncnn ``.param`` text."""
    lines = [line.split() for line in param.splitlines()[2:]]
    return [(parts[0], parts[1]) for parts in lines if len(parts) >= 2]


def ncnn_from_onnx(
    onnx_path: Path, input_shape: tuple[int, ...], dest: Path, timeout_s: float, what: str
) -> None:
    """Convert ``onnx_path`` with pnnx and write the ``ncnn-model`` tar at ``dest``.

    Raises:
        ConversionError: pnnx failed or timed out, or the result has layers this ncnn
            does not have (named).
    """
    import ncnn

    shape = ",".join(str(d) for d in input_shape)
    with tempfile.TemporaryDirectory(prefix="arcface-pnnx-", dir=dest.parent) as work:
        folder = Path(work)
        source = onnx_for_converter(onnx_path, folder / "model.onnx")
        out = {name: folder / name for name in _MEMBERS}
        run_converter(
            [
                str(pnnx_executable()),
                source.name,
                f"inputshape=[{shape}]",
                *PNNX_FLAGS,
                f"ncnnparam={out['model.ncnn.param'].name}",
                f"ncnnbin={out['model.ncnn.bin'].name}",
            ],
            folder,
            timeout_s,
            f"pnnx on {what}",
        )
        missing = [name for name, path in out.items() if not path.is_file()]
        if missing:
            raise ConversionError(f"pnnx on {what}: wrote no {', '.join(missing)}")
        layers = param_layer_types(out["model.ncnn.param"].read_text())
        lacking = [kind for kind, _ in layers if ncnn.layer_to_index(kind) < 0]
        if lacking:
            raise unsupported(what, lacking, f"ncnn {ncnn.__version__}")
        write_tar(dest, out)


@dataclass(frozen=True)
class NcnnOptions:
    """``backends.options.ncnn`` (see the module docstring)."""

    threads: int = threads_option("ncnn num_threads")
    winograd: bool = option(True, parse_bool, "Winograd convolution for 3x3 stride-1 layers")
    convert_timeout_s: float = convert_timeout_option()


@register_backend
class NcnnEngine(Engine):
    """ncnn FP32 (Winograd convolution) over the pnnx conversion of the canonical ONNX."""

    name = "ncnn"
    precisions = ("fp32",)
    description = "ncnn FP32 with Winograd 3x3 convolution (the ONNX converted by pnnx)"
    requires = (
        ("ncnn", "pip install ncnn"),
        ("pnnx", "pip install --no-deps pnnx (its converter is a static binary)"),
    )
    Options = NcnnOptions
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {("cpu", "fp32"): 1.8}

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        return own_kernels(host, "kernels (chosen from CPUID)")

    def _model_tar(self) -> Path:
        import ncnn

        from arcface_lab.core.files import file_sha256

        onnx_path = self.model.onnx_path()
        shape = (1, *(int(d) for d in self.model.onnx_info().input_shape[1:]))
        what = str(self.model.spec)

        def build(tmp: Path) -> None:
            ncnn_from_onnx(onnx_path, shape, tmp, self.opts.convert_timeout_s, what)

        inputs = {
            "onnx_sha256": file_sha256(onnx_path),
            "precision": "fp32",
            "converter": {"pnnx": version("pnnx"), "flags": list(PNNX_FLAGS)},
            "input_shape": list(shape),
            "library": {"ncnn": ncnn.__version__},
        }
        return self._artifact("ncnn-model", inputs, build)

    def _load(self) -> None:
        import ncnn

        if self.device not in (None, "cpu"):
            raise BackendUnavailable(f"ncnn: runs on the CPU only, not {self.device}")
        t0 = time.perf_counter()
        tar = self._model_tar()
        convert_s = time.perf_counter() - t0
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = self.opts.threads or len(os.sched_getaffinity(0))
        opt.use_vulkan_compute = False
        opt.use_winograd_convolution = self.opts.winograd
        for flag in ("fp16_packed", "fp16_storage", "fp16_arithmetic", "bf16_storage"):
            setattr(opt, f"use_{flag}", False)
        if hasattr(opt, "use_bf16_packed"):
            opt.use_bf16_packed = False
        files = read_tar_members(tar, _MEMBERS, "ncnn")
        with tempfile.TemporaryDirectory(prefix="arcface-ncnn-") as work:
            paths = {name: Path(work) / name for name in _MEMBERS}
            for name, path in paths.items():
                path.write_bytes(files[name])
            if net.load_param(str(paths["model.ncnn.param"])) != 0:
                raise EngineError(f"ncnn: {tar}: the model's .param did not load")
            if net.load_model(str(paths["model.ncnn.bin"])) != 0:
                raise EngineError(f"ncnn: {tar}: the model's .bin did not load")
        self._ncnn = ncnn
        self._net = net
        self._input, self._output = net.input_names()[0], net.output_names()[0]
        self.info.versions = {"ncnn": ncnn.__version__, "pnnx": version("pnnx")}
        self.info.details.update(
            threads=opt.num_threads,
            winograd=bool(opt.use_winograd_convolution),
            fp16=False,
            bf16=False,
            batching="one face per extractor, in order (ncnn convolutions take one image)",
            convert_s=round(convert_s, 3),
            load_s=round(time.perf_counter() - t0, 3),
        )

    def _infer(self, x: np.ndarray) -> np.ndarray:
        out = []
        for image in x:
            ex = self._net.create_extractor()
            ex.input(self._input, self._ncnn.Mat(np.ascontiguousarray(image)))
            status, mat = ex.extract(self._output)
            if status != 0:
                raise EngineError(f"ncnn: extracting {self._output!r} failed ({status})")
            out.append(np.array(mat, dtype=np.float32).reshape(-1))
        return np.stack(out)

    def _close(self) -> None:
        self._net.clear()
        del self._net
