"""What storing the gallery costs: the low-FAR and 1:N figures with the gallery compressed.

A gallery of millions of faces is rarely kept as float32 (2 KB a face at 512-d). For a
set of labelled embeddings, :func:`storage_table` stores it as each of :data:`STORAGES`
and reads it back, then measures what a deployment would see, against float32:

* ``float16``: each value rounded to half precision (2 bytes a value);
* ``int8``: symmetric per-vector scale, ``q = round(x / s)`` with ``s = max|x| / 127``
  (one byte a value and a float32 scale);
* ``pq64``: product quantization with 64 one-byte codes a face (FAISS ``IndexPQ``,
  64 sub-quantizers of 256 centroids), trained on the set itself; needs ``faiss-cpu``
  and at least 256 faces to train (FAISS recommends 39 a centroid, 9984: a larger
  gallery trains better codebooks, so this row is a pessimistic figure for small sets).

1:1: every pair scores a stored face against a float32 one (the probe is never stored),
judged at float32's thresholds at each FAR: the TAR and FAR it gives and the decisions
that flip (:func:`arcface_lab.core.lowfar.compare_all_pairs`, its mixed case). 1:N: the
gallery entries stored, the probes float32, judged at float32's thresholds: rank-1, FNIR
at each FPIR and the probes that flip. IVF-PQ is not measured: its search visits only
some lists, which reconstruction alone cannot show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arcface_lab.config.params import GALLERY_STORAGES
from arcface_lab.core.lowfar import compare_all_pairs, compare_identification, split_gallery
from arcface_lab.errors import InputError

__all__ = ["PQ_BYTES", "STORAGES", "storage_table", "stored"]

#: The ways a gallery can be stored, smallest last.
STORAGES = GALLERY_STORAGES
#: Bytes a face in ``pq64`` (one code per sub-quantizer).
PQ_BYTES = 64
_PQ_CENTROIDS = 256


def stored(embeddings: np.ndarray, storage: str) -> tuple[np.ndarray, int]:
    """``embeddings`` as they read back from ``storage`` (float32, L2-normalized again) and
    the bytes a face takes there.

    Raises:
        InputError: an unknown storage, ``pq64`` without ``faiss-cpu`` or with fewer than
            256 faces, or a dimension 64 does not divide.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, dim = x.shape
    if storage == "float16":
        back, size = x.astype(np.float16).astype(np.float32), 2 * dim
    elif storage == "int8":
        scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        codes = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
        back, size = codes.astype(np.float32) * scale.astype(np.float32), dim + 4
    elif storage == "pq64":
        try:
            import faiss
        except ImportError:
            raise InputError(
                "gallery storage pq64 needs FAISS: pip install faiss-cpu", argument="storage"
            ) from None
        if dim % PQ_BYTES:
            raise InputError(f"pq64: {dim}-d embeddings do not split into {PQ_BYTES} parts")
        if n < _PQ_CENTROIDS:
            raise InputError(
                f"pq64: {n} faces cannot train {_PQ_CENTROIDS} centroids a sub-quantizer "
                f"(at least {_PQ_CENTROIDS} needed)"
            )
        index = faiss.IndexPQ(dim, PQ_BYTES, 8, faiss.METRIC_INNER_PRODUCT)
        # FAISS asks for 39 points a centroid (9984) and says so on stderr for each of the
        # 64 sub-quantizers; the set is what there is to train on, and the table says so
        index.pq.cp.min_points_per_centroid = 1
        index.train(x)
        back, size = index.sa_decode(index.sa_encode(x)), PQ_BYTES
    else:
        raise InputError(
            f"gallery storage {storage!r}: expected one of {', '.join(STORAGES)}",
            argument="storage",
        )
    norms = np.linalg.norm(back, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (back / norms).astype(np.float32), int(size)


def storage_table(
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    storages: Sequence[str] = STORAGES,
    fars: Sequence[float] = (1e-3, 1e-4),
    fpirs: Sequence[float] = (1e-2,),
    nonmated_fraction: float = 0.5,
) -> dict[str, Any]:
    """Each storage of the gallery against float32 (see the module docstring).

    A storage that cannot be measured here (``pq64`` without FAISS, too few faces) is a
    row with its reason, never an error: the others are still measured.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    dim = int(x.shape[1])
    gallery, _ = split_gallery(np.asarray(labels), nonmated_fraction)
    rows: list[dict[str, Any]] = []
    for storage in storages:
        try:
            back, size = stored(x, storage)
        except InputError as exc:
            if storage not in STORAGES:
                raise
            rows.append({"storage": storage, "supported": False, "reason": str(exc)})
            continue
        pairs = compare_all_pairs(x, back, labels, fars=fars, max_listed=0)
        mixed_gallery = x.copy()
        mixed_gallery[gallery] = back[gallery]
        ident = compare_identification(
            x, mixed_gallery, labels, fpirs=fpirs, nonmated_fraction=nonmated_fraction,
            max_listed=0, mixed=False,
        )  # fmt: skip
        rows.append(
            {
                "storage": storage,
                "supported": True,
                "bytes_per_face": size,
                **({"trained_on": int(x.shape[0])} if storage == "pq64" else {}),
                "compression": 4 * dim / size,
                "cosine_min": float(np.min(np.sum(x * back, axis=1) / np.linalg.norm(x, axis=1))),
                "verification": [
                    (
                        {
                            "far": t["far_target"],
                            "tar_float32": t["tar_reference"],
                            "tar": t["tar_measured"],
                            "far_measured": t["far_measured"],
                            "decision_flips": t["decision_flips"],
                        }
                        if t["supported"]
                        else {"far": t["far_target"], "supported": False, "reason": t["reason"]}
                    )
                    for t in pairs["mixed"]["threshold_transfer"]
                ],
                "rank1_float32": ident["reference"]["rank"].get("1"),
                "rank1": ident["candidate"]["rank"].get("1"),
                "rank1_flips": ident["rank1_flips"],
                "identification": [
                    (
                        {
                            "fpir": p["fpir"],
                            "fnir_float32": p["reference_fnir"],
                            "fnir": p["candidate_fnir"],
                            "decision_flips": p["decision_flips"],
                        }
                        if p["supported"]
                        else {"fpir": p["fpir"], "supported": False, "reason": p["reason"]}
                    )
                    for p in ident["points"]
                ],
            }
        )
    return {
        "faces": int(x.shape[0]),
        "float32_bytes_per_face": 4 * dim,
        "gallery_entries": int(gallery.size),
        "storages": rows,
    }
