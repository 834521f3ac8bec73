"""The reference engine: PyTorch eager FP32, the ground truth every engine is compared with.

On CUDA, TF32 is switched off for convolutions and matmuls so the reference
is strict FP32 (recorded in ``info.details``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from arcface_lab.engines.base import Engine
from arcface_lab.engines.registry import register_backend
from arcface_lab.errors import BackendUnavailable

__all__ = ["TorchEngine"]


def torch_device(requested: str | None) -> str:
    """``requested``, or ``cuda`` when a CUDA device is present, else ``cpu``."""
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {requested!r}: torch sees no CUDA device")
    return requested


@register_backend
class TorchEngine(Engine):
    """PyTorch eager FP32 on CPU or CUDA (needs a ``.pth`` or ``seeded:`` model)."""

    name = "torch"
    precisions = ("fp32",)
    description = "PyTorch eager FP32, the reference (CPU or CUDA)"
    requires = (("torch", "pip install torch"),)
    needs_torch = True
    devices = ("cpu", "cuda")
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {
        ("cpu", "fp32"): 1.0,
        ("cuda", "fp32"): 1.0,
    }

    def _load(self) -> None:
        import torch

        if not self.model.has_torch_module:
            raise BackendUnavailable(
                f"torch: {self.model.spec} is an ONNX file; the torch backend runs "
                ".pth checkpoints and seeded: models"
            )
        self.device = torch_device(self.device)
        self._torch = torch
        self._module = self.model.torch_module().to(self.device).eval()
        details: dict[str, Any] = {"threads": torch.get_num_threads()}
        if self.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            details.update(gpu=torch.cuda.get_device_name(self.device), tf32=False)
        self.info.device = self.device
        self.info.versions = {"torch": torch.__version__}
        self.info.details = details

    def _infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._module(torch.from_numpy(x).to(self.device))
            return out.float().cpu().numpy()

    def _close(self) -> None:
        del self._module
