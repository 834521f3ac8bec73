"""Regenerate the golden embeddings: run deliberately (``make goldens``), never from a test.

Writes ``seeded_r18.npy`` (float32, L2-normalized, 16 x 512) from the torch
reference and ``manifest.json`` recording how, with which library versions.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL, SEED, IMAGES, IMAGE_SEED = "seeded:r18", 0, 16, 11


def main() -> int:
    import torch

    from arcface_lab import __version__
    from arcface_lab.data.images import synthetic_faces
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.models.source import resolve_model

    model = resolve_model(MODEL, seed=SEED)
    faces = synthetic_faces(IMAGES, seed=IMAGE_SEED)
    with create_engine("torch", model, strict=True, device="cpu") as engine:
        emb = engine.embed(faces)
    np.save(HERE / "seeded_r18.npy", emb.astype(np.float32))
    manifest = {
        "model": MODEL,
        "model_seed": SEED,
        "model_sha256": model.sha256(),
        "images": f"arcface_lab.data.synthetic_faces({IMAGES}, seed={IMAGE_SEED})",
        "backend": "torch fp32 cpu (the reference), L2-normalized",
        "shape": list(emb.shape),
        "versions": {
            "arcface_lab": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "how": "make goldens (python tests/golden/make_goldens.py)",
    }
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {HERE / 'seeded_r18.npy'} {emb.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
