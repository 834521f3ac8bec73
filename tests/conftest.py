"""Shared fixtures: a tiny seeded model, its ONNX export, synthetic faces, a real S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    """One thread per core across the test processes: ``make test`` runs two pytest-xdist
    workers on two cores, and two threads each made every library's thread pool wait on
    the other worker's (the suite took 735 s instead of 542 s on cpu-amx). Set before any
    test imports torch or starts a worker process; an ``OMP_NUM_THREADS`` given wins."""
    cores = len(os.sched_getaffinity(0))
    if hasattr(config, "workerinput"):
        workers = int(config.workerinput["workercount"])
    else:  # the controller: its workers inherit what it sets
        n = config.getoption("numprocesses", default=None)
        workers = n if isinstance(n, int) and n > 0 else (cores if n == "auto" else 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))


def tiny_params(**overrides: object) -> dict[str, object]:
    """A whole run's params small enough for a test: seeded r18, 8 faces (and 8 held-out),
    20 pairs, 0.2 s timing.

    ``overrides`` replace top-level sections (``backends=...``, ``data=...``).
    """
    raw: dict[str, object] = {
        "name": "tiny",
        "model": {"spec": "seeded:r18"},
        "backends": {
            "chain": ["onnxruntime", "torch"],
            "reference": "torch",
            "precisions": ["fp32"],
        },
        "data": {
            "images": "synthetic:8",
            "held_out": "synthetic:8",  # not the default 64: every engine embeds them
            "pairs": "synthetic:20",
            "flip": True,
        },
        "bench": {"batch_sizes": [4], "warmup_s": 0.0, "budget_s": 0.2, "min_repeats": 2},
        "thresholds": {"cosine_min": {"fp32": 0.99999}, "decision_flips_max": 0},
    }
    raw.update(overrides)
    return raw


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
    from arcface_lab.data.images import synthetic_faces

    return synthetic_faces(16, seed=3)


@pytest.fixture(scope="session")
def torch_r18(r18):
    from arcface_lab.engines.registry import create_engine

    with create_engine("torch", r18, strict=True) as engine:
        yield engine


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of two (N, D) arrays."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


#: Dummy credentials through the standard AWS chain; no config files, no instance metadata.
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "test-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Set :data:`AWS_TEST_ENV` (and drop profile/endpoint overrides) for the session."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def s3_server(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SeaweedFS S3 server for the session, with an ``engines`` bucket."""
    pytest.importorskip("boto3")
    from tests import seaweedfs

    with seaweedfs.running(tmp_path_factory.mktemp("weed")) as server:
        seaweedfs.create_bucket(server, "engines")
        yield server
