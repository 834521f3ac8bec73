"""MNN: FP32 on the CPU, the second Winograd engine, the whole batch in one call.

MNN's CPU backend picks Winograd units for 3x3 convolutions from its own cost model.
``precision: high`` keeps every tensor in FP32 (``normal`` and ``low`` allow FP16/BF16
where the CPU has them); the weights are converted without ``--fp16`` or weight
quantization.

Conversion (the ``mnn-model`` artifact, one ``.mnn`` file in the engine store, keyed
by the ONNX sha256, the MNN version and the converter flags, checked by sha256 before
it is read) runs MNN's converter through its C extension ``_tools`` in a subprocess with
a timeout. Never through ``MNN.tools``: those Python wrappers pip-install and call a
telemetry SDK on import. The converter exits 0 even when it fails, so success is read
from its output ("Converted Success!") and an operator it lacks ("These Op Not
Support: ONNX::X") is a :class:`~arcface_lab.errors.ConversionError` naming it.

Options (``backends.options.mnn``):
    threads: ``numThread`` (0, the default: the cores this process may use).
    convert_timeout_s: seconds the converter may take (default 600).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.engines.base import Engine, Support, own_kernels
from arcface_lab.engines.converters import (
    convert_timeout_option,
    run_converter,
    threads_option,
    unsupported,
)
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable, ConversionError, EngineError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["MnnEngine", "mnn_from_onnx"]

#: The converter's flags beyond input and output (part of the artifact's key): FP32
#: weights, no quantization.
CONVERTER_FLAGS = ("-f", "ONNX", "--bizCode", "arcface_lab")
#: The converter, run by ``python -c``: only the C extension, never ``MNN.tools``.
_CONVERT = "import sys, _tools; _tools.mnnconvert(sys.argv)"
_UNSUPPORTED = re.compile(r"These Op Not Support:\s*(.*)")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """MNN's C++ code prints banners on file descriptor 1; they go to stderr instead, so
    a command whose stdout is data (``embed -``, JSON) stays clean."""
    import ctypes

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)  # C stdio's buffer, before fd 1 is stdout again
        os.dup2(saved, 1)
        os.close(saved)


def mnn_version() -> str:
    from importlib.metadata import version

    return version("MNN")


def mnn_from_onnx(onnx_path: Path, dest: Path, timeout_s: float, what: str) -> None:
    """Convert ``onnx_path`` to an ``.mnn`` file at ``dest`` in a subprocess.

    Raises:
        ConversionError: an operator MNN lacks (named), a failed conversion or a timeout.
    """
    with tempfile.TemporaryDirectory(prefix="arcface-mnn-", dir=dest.parent) as work:
        out = Path(work) / "model.mnn"
        cmd = [sys.executable, "-c", _CONVERT, *CONVERTER_FLAGS]
        log = run_converter(
            [*cmd, "--modelFile", str(onnx_path), "--MNNModel", str(out)],
            Path(work),
            timeout_s,
            f"MNN's converter on {what}",
        )
        ops = [op.split("::")[-1] for m in _UNSUPPORTED.findall(log) for op in m.split()]
        if ops:
            raise unsupported(what, ops, f"MNN {mnn_version()}")
        if "Converted Success" not in log or not out.is_file():
            raise ConversionError(f"MNN's converter on {what} failed: ...{log.strip()[-600:]}")
        os.replace(out, dest)


@dataclass(frozen=True)
class MnnOptions:
    """``backends.options.mnn`` (see the module docstring)."""

    threads: int = threads_option("numThread")
    convert_timeout_s: float = convert_timeout_option()


@register_backend
class MnnEngine(Engine):
    """MNN FP32 (``precision: high``) over the conversion of the canonical ONNX."""

    name = "mnn"
    precisions = ("fp32",)
    description = "MNN FP32 (Winograd from its cost model), the whole batch in one call"
    requires = (("MNN", "pip install MNN"), ("_tools", "pip install MNN (its converter)"))
    Options = MnnOptions
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {("cpu", "fp32"): 1.7}

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        return own_kernels(host, "kernels (chosen from CPUID)")

    def _model_file(self) -> Path:
        from arcface_lab.core.files import file_sha256

        onnx_path = self.model.onnx_path()
        what = str(self.model.spec)

        def build(tmp: Path) -> None:
            mnn_from_onnx(onnx_path, tmp, self.opts.convert_timeout_s, what)

        inputs = {
            "onnx_sha256": file_sha256(onnx_path),
            "precision": "fp32",
            "converter": {"flags": list(CONVERTER_FLAGS)},
            "library": {"MNN": mnn_version()},
        }
        return self._artifact("mnn-model", inputs, build)

    def _load(self) -> None:
        if self.device not in (None, "cpu"):
            raise BackendUnavailable(f"mnn: runs on the CPU only, not {self.device}")
        t0 = time.perf_counter()
        path = self._model_file()
        convert_s = time.perf_counter() - t0
        info = self.model.onnx_info()
        threads = self.opts.threads or len(os.sched_getaffinity(0))
        with _stdout_to_stderr():
            import MNN

            config = {"backend": "CPU", "precision": "high", "numThread": threads}
            runtime = MNN.nn.create_runtime_manager((config,))
            self._net: Any = MNN.nn.load_module_from_file(
                str(path), [info.input_name], [info.output_name], runtime_manager=runtime
            )
        if self._net is None:
            raise EngineError(f"mnn: {path}: the converted model did not load")
        self._mnn = MNN
        self.info.versions = {"MNN": mnn_version()}
        self.info.details.update(
            threads=threads,
            precision="high (FP32)",
            batching="the whole batch in one forward call",
            convert_s=round(convert_s, 3),
            load_s=round(time.perf_counter() - t0, 3),
        )

    def _infer(self, x: np.ndarray) -> np.ndarray:
        expr = self._mnn.expr
        (y,) = self._net.forward([expr.const(x, list(x.shape), expr.NCHW)])
        return np.array(y.read(), dtype=np.float32).reshape(len(x), -1)

    def _close(self) -> None:
        del self._net
