"""Checkpoints: safe loading, architecture inference, seeded weights.

Weights are read with ``torch.load(weights_only=True)`` and nothing else: a
file that needs arbitrary unpickling is refused (:class:`UnsafeFileError`),
never executed. Common wrappers are unwrapped (``{"state_dict": ...}``,
``{"model": ...}``, DataParallel's ``module.`` prefix).

The embedded default model ``seeded:<arch>`` has deterministic, *untrained*
weights: random convolutions whose BatchNorm statistics are calibrated on
synthetic face crops, so every activation is of order one (nothing overflows
in FP16) and BatchNorm folding in the optimized engines is exercised with
non-trivial statistics. Its embeddings identify nothing; they are only a
fixed function to compare engines on.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from arcface_lab.errors import CheckpointError, UnsafeFileError
from arcface_lab.models.iresnet import ARCH_LAYERS, IResNet, build_iresnet

__all__ = [
    "SEEDED_CALIBRATION_IMAGES",
    "infer_arch",
    "load_checkpoint_model",
    "load_state_dict",
    "seeded_model",
]

#: Synthetic crops used to calibrate the BatchNorm statistics of seeded models.
SEEDED_CALIBRATION_IMAGES = 32

_WRAPPER_KEYS = ("state_dict", "model", "backbone", "model_state_dict")
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.conv1\.weight$")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a mapping of tensors from ``path`` with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"{path}: refused to load: it needs more than plain tensors to unpickle "
            f"(weights_only=True: {first})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    return _unwrap(obj, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # {"state_dict": {...}} and similar, possibly nested once or twice
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of parameter names to tensors), "
            f"got {type(obj).__name__}"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(
            f"{path}: expected a mapping of parameter names to tensors; "
            f"{len(bad)} entries are not tensors (first: {bad[0]!r})"
        )
    state = dict(obj)
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{path}: weight {key!r} holds {count} NaN or infinite value(s) of "
                f"{value.numel()}; the model cannot give finite embeddings"
            )
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def infer_arch(state: Mapping[str, torch.Tensor], source: str = "state dict") -> tuple[str, int]:
    """Architecture name and embedding size of an iresnet state dict."""
    depth = [0, 0, 0, 0]
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            stage, index = int(m.group(1)) - 1, int(m.group(2))
            depth[stage] = max(depth[stage], index + 1)
    for name, layers in ARCH_LAYERS.items():
        if tuple(depth) == layers:
            fc = state.get("fc.weight")
            if fc is None or fc.ndim != 2:
                raise CheckpointError(f"{source}: no 2-D 'fc.weight': not an iresnet backbone")
            return name, int(fc.shape[0])
    known = ", ".join(f"{n}={list(v)}" for n, v in ARCH_LAYERS.items())
    raise CheckpointError(
        f"{source}: blocks per stage {depth} match no iresnet architecture ({known})"
    )


def load_checkpoint_model(path: str | Path, arch: str | None = None) -> IResNet:
    """An eval-mode IResNet with the weights of ``path`` loaded with ``strict=True``."""
    path = Path(path)
    state = load_state_dict(path)
    inferred, num_features = infer_arch(state, str(path)) if arch is None else (arch, 0)
    if arch is not None:
        fc = state.get("fc.weight")
        num_features = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 512
    model = build_iresnet(inferred, num_features=num_features)
    _load_strict(model, state, path, inferred)
    return model.eval()


def _load_strict(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)}, {arch} {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:5])}")
    if problems:
        raise CheckpointError(f"{path}: does not fit iresnet {arch}: " + " | ".join(problems))
    model.load_state_dict(state, strict=True)


def seeded_model(arch: str, seed: int = 0) -> IResNet:
    """Deterministic untrained weights for ``arch``: the same bytes on every CPU.

    The weights are drawn by NumPy's seeded generator (``torch.randn`` is not
    bit-stable across CPUs: its vectorized Box-Muller path depends on the ISA the
    kernels run as), and the BatchNorm statistics come from one float64 forward pass
    over synthetic crops, cast to float32 afterwards, so the kernels' summation order
    (which differs between AVX2 and AVX-512 code) cannot reach the stored float32 bits.
    """
    import numpy as np

    from arcface_lab.core.preprocess import Preprocess
    from arcface_lab.data.images import synthetic_faces

    model = build_iresnet(arch)
    rng = np.random.default_rng(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.from_numpy(std * rng.standard_normal(tuple(shape)))

    def uniform(shape: torch.Size, low: float, width: float) -> torch.Tensor:
        return torch.from_numpy(low + width * rng.random(tuple(shape)))

    model.double()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                fan_in = module.weight[0].numel()
                std = (2.0 / fan_in) ** 0.5 if isinstance(module, nn.Conv2d) else fan_in**-0.5
                module.weight.copy_(normal(module.weight.shape, std))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.01))
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.weight.copy_(uniform(module.weight.shape, 0.5, 1.0))
                module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(uniform(module.weight.shape, 0.1, 0.3))
        # Calibrate BatchNorm statistics on synthetic crops (one batch: exact batch
        # statistics), in float64 (see the docstring), then cast the whole model.
        images = synthetic_faces(SEEDED_CALIBRATION_IMAGES, seed=seed)
        batch = torch.from_numpy(Preprocess()(images)).double()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(batch)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                module.momentum = 0.1
    return model.float().eval()
