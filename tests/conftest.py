"""Shared fixtures: a tiny seeded model, its ONNX export, synthetic faces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# One thread per library keeps the two CI cores from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def r18(cache_dir: Path):
    """``seeded:r18`` as a ModelSource, with its ONNX export done once per session."""
    from arcface_lab.models.source import resolve_model

    source = resolve_model("seeded:r18", cache_dir=cache_dir)
    source.onnx_path()
    return source


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    from arcface_lab.data import synthetic_faces

    return synthetic_faces(16, seed=3)


@pytest.fixture(scope="session")
def torch_r18(r18):
    from arcface_lab.registry import create_engine

    with create_engine("torch", r18, strict=True) as engine:
        yield engine


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of two (N, D) arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)
