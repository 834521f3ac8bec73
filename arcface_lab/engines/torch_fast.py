"""PyTorch optimized: FP16/BF16, channels-last, ``torch.compile`` and CUDA graphs.

The fast path for GPUs without TensorRT, and (BF16 + channels-last) for CPUs
with native BF16. The module is a private copy of the model converted with
``.to(dtype)``; the final ``BatchNorm1d`` (``features``) stays FP32 and so does
the output, which costs nothing and keeps the embedding's normalization in
full precision.

On CUDA each batch shape gets one captured CUDA graph with static input and
output buffers (warmed up on a side stream before capture, as the PyTorch
CUDA-graphs documentation requires), then replayed. On CPU, ``fp16`` runs but
is recorded as a warning: torch FP16 convolutions on CPU are 4-27x slower than
FP32 and measure weight rounding, not a fast path.

Options (``backends.options.torch_fast`` in a params file):
    channels_last: NHWC memory format (default True).
    compile: False (default), True (``max-autotune-no-cudagraphs`` on CUDA, the default
        mode on CPU) or a ``torch.compile`` mode name (``reduce-overhead`` and
        ``max-autotune`` bring Inductor's own CUDA graphs and turn ours off).
    cuda_graphs: capture and replay one CUDA graph per batch shape (default True on CUDA).
    tf32: allow TF32 for FP32 convolutions and matmuls on CUDA (default False); set only
        around this engine's own calls, so the strict FP32 reference is not affected.
    cudnn_benchmark: let cuDNN time its algorithms (default True on CUDA).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from arcface_lab.config.fields import Ctx, nullable, option, parse_bool
from arcface_lab.engines.base import Engine, Support
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable, InputError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["TorchFastEngine"]

CPU_FP16_WARNING = (
    "fp16 on CPU: torch fp16 convolutions on CPU are 4-27x slower than fp32 and measure "
    "weight rounding only; bf16 + channels_last is the CPU fast path"
)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compile(value: Any, ctx: Ctx) -> bool | str:
    if isinstance(value, bool) or value in COMPILE_MODES:
        return value
    raise ctx.error(f"true, false or one of {', '.join(COMPILE_MODES)}", value)


@dataclass(frozen=True)
class TorchFastOptions:
    """``backends.options.torch_fast``."""

    channels_last: bool = option(True, parse_bool, "NHWC memory format for the convolutions")
    compile: bool | str = option(
        False, _compile, "torch.compile (true: its best mode for the device, or a mode name)"
    )
    cuda_graphs: bool | None = option(
        None, nullable(parse_bool), "replay CUDA graphs per batch size (None: on with CUDA)"
    )
    tf32: bool = option(False, parse_bool, "allow TF32 for FP32 layers on CUDA")
    cudnn_benchmark: bool | None = option(
        None, nullable(parse_bool), "cuDNN autotuning (None: on with CUDA)"
    )


def _fp32_wrapper(module: Any) -> Any:
    """``module`` run in FP32 whatever dtype its input has."""
    import torch

    class Float32(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner.float()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x.float())
            return out

    return Float32(module)


@register_backend
class TorchFastEngine(Engine):
    """PyTorch with reduced precision, channels-last, optional compile and CUDA graphs."""

    name = "torch_fast"
    precisions = ("fp32", "fp16", "bf16")
    description = "PyTorch optimized: fp16/bf16, channels-last, torch.compile, CUDA graphs"
    requires = (("torch", "pip install torch"),)
    Options = TorchFastOptions
    needs_torch = True
    devices = ("cpu", "cuda")
    # seeded r50, batch 32: CPU bf16 2.7x on Zen 4; CUDA figures are the GPU targets' order.
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {
        ("cpu", "fp32"): 1.0,
        ("cpu", "bf16"): 2.7,
        ("cuda", "fp32"): 1.1,
        ("cuda", "fp16"): 6.0,
        ("cuda", "bf16"): 5.5,
    }

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        if kind == "cpu":
            if precision == "fp16":
                return Support("emulated", CPU_FP16_WARNING)
            if precision == "bf16" and not host.cpu.native_bf16:
                return Support(
                    "emulated",
                    f"torch emulates BF16 on a CPU without AVX512_BF16 or AMX ({host.cpu.cls}): "
                    "about 10x slower than FP32",
                )
            return Support("native")
        major, minor = host.gpus[0].capability
        if precision == "bf16" and major < 8:
            return Support(
                "emulated", f"BF16 needs compute capability 8.0, this GPU is {major}.{minor}"
            )
        if precision == "fp16" and major < 7:
            return Support(
                "emulated", f"no FP16 tensor cores below compute capability 7.0 ({major}.{minor})"
            )
        return Support("native")

    def _compile_mode(self, cuda: bool) -> str | None:
        value = self.opts.compile
        if value is False:
            return None
        if value is True:
            return "max-autotune-no-cudagraphs" if cuda else "default"
        return str(value)

    def _load(self) -> None:
        import torch

        from arcface_lab.engines.torch_ref import torch_device

        if not self.model.has_torch_module:
            raise BackendUnavailable(
                f"torch_fast: {self.model.spec} is an ONNX file; the torch_fast backend runs "
                ".pth checkpoints and seeded: models"
            )
        self._torch = torch
        self.device = torch_device(self.device)
        cuda = self.device.startswith("cuda")
        self._dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
            self.precision
        ]
        opts = self.opts
        self._channels_last, self._tf32 = opts.channels_last, opts.tf32
        self._benchmark = cuda if opts.cudnn_benchmark is None else opts.cudnn_benchmark
        mode = self._compile_mode(cuda)
        graphs = cuda if opts.cuda_graphs is None else opts.cuda_graphs
        if graphs and not cuda:
            raise InputError("torch_fast options: cuda_graphs: needs a CUDA device, got cpu")
        if mode in ("reduce-overhead", "max-autotune") and graphs:
            graphs = False  # Inductor captures its own CUDA graphs in these modes
        self._graphs_on = graphs

        # A private copy: the model source's module is shared with other engines.
        module = copy.deepcopy(self.model.torch_module()).eval().to(self.device)
        if self._dtype != torch.float32:
            module = module.to(self._dtype)
            features = getattr(module, "features", None)
            if isinstance(features, torch.nn.BatchNorm1d):
                module.features = _fp32_wrapper(features)
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module: Any = module
        if mode is not None:
            # With our graphs each batch shape is compiled and captured once: no dynamic shapes.
            self._module = torch.compile(
                module, mode=None if mode == "default" else mode, dynamic=False if graphs else None
            )
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, Any]] = {}
        self._pool = torch.cuda.graph_pool_handle() if graphs else None

        details: dict[str, Any] = {
            "channels_last": self._channels_last,
            "compile": mode or False,
            "cuda_graphs": graphs,
            "fp32_layers": ["features"] if self._dtype != torch.float32 else [],
            "threads": torch.get_num_threads(),
        }
        if cuda:
            details.update(
                gpu=torch.cuda.get_device_name(self.device),
                tf32=self._tf32,
                cudnn_benchmark=self._benchmark,
            )
        elif self.precision == "fp16":
            self.info.warnings.append(CPU_FP16_WARNING)
        self.info.device = self.device
        self.info.versions = {"torch": torch.__version__}
        self.info.details = details

    @contextlib.contextmanager
    def _backend_flags(self) -> Iterator[None]:
        """TF32 and cuDNN benchmark for this engine's calls only; restored afterwards."""
        torch = self._torch
        if not self.info.device.startswith("cuda"):
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self._tf32
        try:
            with torch.backends.cudnn.flags(
                enabled=True, benchmark=self._benchmark, allow_tf32=self._tf32
            ):
                yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved

    def _to_input(self, x: np.ndarray) -> Any:
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._dtype)
        return t.contiguous(memory_format=torch.channels_last) if self._channels_last else t

    def _forward(self, t: Any) -> Any:
        return self._module(t).float()

    def _graph(self, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
        """The captured graph for ``shape`` with its static input and output buffers."""
        torch = self._torch
        if shape in self._graphs:
            return self._graphs[shape]
        static_in = torch.zeros(shape, dtype=self._dtype, device=self.device)
        if self._channels_last:
            static_in = static_in.contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture stream (cuDNN, allocator)
            for _ in range(3):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self._forward(static_in)
        self._graphs[shape] = (graph, static_in, static_out)
        self.info.details["graph_batch_sizes"] = sorted(s[0] for s in self._graphs)
        return self._graphs[shape]

    def _infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        grad_off = torch.no_grad() if self._graphs_on else torch.inference_mode()
        with grad_off, self._backend_flags():
            if self._graphs_on:
                with torch.cuda.device(self.device):
                    graph, static_in, static_out = self._graph(tuple(x.shape))
                    static_in.copy_(self._to_input(x))
                    graph.replay()
                    out = static_out.cpu()
            else:
                out = self._forward(self._to_input(x)).cpu()
        arr: np.ndarray = out.numpy()
        return arr

    def _close(self) -> None:
        self._graphs.clear()
        del self._module
