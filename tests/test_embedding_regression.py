"""Golden embeddings: every available backend and precision still computes the same model.

The goldens (``tests/golden/``) were made once by the torch reference, see
their manifest; they are regenerated only deliberately with ``make goldens``.
Thresholds come from ``params/ci.yaml``: a changed model, preprocessing or
export breaks this test, whichever backend runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arcface_lab.config.params import load_params
from arcface_lab.data.images import synthetic_faces
from arcface_lab.engines.registry import create_engine, list_backends
from arcface_lab.errors import BackendUnavailable
from arcface_lab.models.source import resolve_model
from tests.conftest import cosines

GOLDEN = Path(__file__).resolve().parent / "golden"
ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
THRESHOLDS = load_params(ROOT / "params" / "ci.yaml").thresholds.cosine_min

CASES = [
    pytest.param(row.name, precision, id=f"{row.name}-{precision}")
    for row in list_backends()
    for precision in row.precisions
    if precision in THRESHOLDS
]


@pytest.fixture(scope="module")
def golden_model(cache_dir: Path):
    # The weights' sha256 is in the manifest for the record; it is not asserted, since the
    # BatchNorm calibration of seeded weights may differ in the last bit between CPUs.
    return resolve_model(MANIFEST["model"], seed=MANIFEST["model_seed"], cache_dir=cache_dir)


@pytest.mark.parametrize(("backend", "precision"), CASES)
def test_backend_matches_goldens(golden_model, backend: str, precision: str) -> None:
    reason = next(r.reason for r in list_backends(backend) if r.name == backend)
    if reason:
        pytest.skip(f"{backend}: {reason}")
    golden = np.load(GOLDEN / "seeded_r18.npy")
    faces = synthetic_faces(golden.shape[0], seed=11)
    try:
        engine = create_engine(backend, golden_model, precision=precision, strict=True)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    with engine:
        emb = engine.embed(faces)
    assert emb.shape == golden.shape
    assert cosines(golden, emb).min() >= THRESHOLDS[precision]
