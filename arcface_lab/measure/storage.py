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
  gallery trains better codebooks, so this row is a pessimistic figure for small sets);
* ``ivfpq64``: the same 64-byte codes behind an inverted file (FAISS ``IndexIVFPQ``: a
  coarse quantizer of ``lists`` centroids, each face's residual product-quantized), as
  large galleries are searched. Each face costs its code and the 8-byte id FAISS keeps
  beside it. Needs 39 faces a list to train the coarse quantizer (FAISS's own minimum).

1:1: every pair scores a stored face against a float32 one (the probe is never stored),
judged at float32's thresholds at each FAR: the TAR and FAR it gives and the decisions
that flip (:func:`arcface_lab.core.lowfar.compare_all_pairs`, its mixed case). 1:N: the
gallery entries stored, the probes float32, judged at float32's thresholds: rank-1, FNIR
at each FPIR and the probes that flip. For ``ivfpq64`` the 1:N figures come from the
index's own search (:func:`arcface_lab.core.lowfar.compare_identification_index`),
visiting ``probes`` of its lists: a mate in a list not visited is not found, which
reconstruction alone cannot show; its 1:1 figures score the reconstructed faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arcface_lab.config.params import GALLERY_STORAGES
from arcface_lab.core.lowfar import (
    compare_all_pairs,
    compare_identification,
    compare_identification_index,
    split_gallery,
)
from arcface_lab.errors import InputError

__all__ = ["IVF_ID_BYTES", "PQ_BYTES", "STORAGES", "Ivf", "storage_table", "stored"]

#: The ways a gallery can be stored, smallest last.
STORAGES = GALLERY_STORAGES
#: Bytes a face in ``pq64`` (one code per sub-quantizer).
PQ_BYTES = 64
#: Bytes FAISS keeps beside each code in an inverted list (the face's int64 id).
IVF_ID_BYTES = 8
_PQ_CENTROIDS = 256
#: FAISS's minimum of training points a centroid (it warns below it).
_POINTS_PER_LIST = 39


@dataclass(frozen=True)
class Ivf:
    """An inverted file's shape: ``lists`` coarse centroids, ``probes`` of them visited
    a search (``params: scale.ivf_lists, scale.ivf_probes``)."""

    lists: int = 16
    probes: int = 4


def _unit(embeddings: np.ndarray) -> np.ndarray:
    """Rows L2-normalized, float32 and contiguous: what a gallery stores and FAISS reads."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise InputError(
            "gallery storage pq64 / ivfpq64 needs FAISS: pip install faiss-cpu",
            argument="storage",
        ) from None
    return faiss


def _pq_index(x: np.ndarray, storage: str, ivf: Ivf) -> Any:
    """A trained FAISS ``IndexPQ`` (``pq64``) or ``IndexIVFPQ`` (``ivfpq64``) for ``x``."""
    faiss = _faiss()
    n, dim = x.shape
    if dim % PQ_BYTES:
        raise InputError(f"{storage}: {dim}-d embeddings do not split into {PQ_BYTES} parts")
    if n < _PQ_CENTROIDS:
        raise InputError(
            f"{storage}: {n} faces cannot train {_PQ_CENTROIDS} centroids a sub-quantizer "
            f"(at least {_PQ_CENTROIDS} needed)"
        )
    if storage == "pq64":
        index = faiss.IndexPQ(dim, PQ_BYTES, 8, faiss.METRIC_INNER_PRODUCT)
        pq = index.pq
    else:
        if n < _POINTS_PER_LIST * ivf.lists:
            raise InputError(
                f"ivfpq64: {n} faces cannot train {ivf.lists} lists (FAISS asks for "
                f"{_POINTS_PER_LIST} a list: at least {_POINTS_PER_LIST * ivf.lists} faces)"
            )
        coarse = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(coarse, dim, ivf.lists, PQ_BYTES, 8, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(ivf.probes, ivf.lists)
        pq = index.pq
    # FAISS asks for 39 points a centroid (9984) and says so on stderr for each of the
    # 64 sub-quantizers; the set is what there is to train on, and the table says so
    pq.cp.min_points_per_centroid = 1
    index.train(x)
    return index


def stored(embeddings: np.ndarray, storage: str, ivf: Ivf = Ivf()) -> tuple[np.ndarray, int]:
    """``embeddings`` as they read back from ``storage`` (float32, L2-normalized again) and
    the bytes a face takes there.

    Raises:
        InputError: an unknown storage, ``pq64`` or ``ivfpq64`` without ``faiss-cpu`` or
            with fewer than 256 faces (``ivfpq64``: 39 a list), or a dimension 64 does not
            divide.
    """
    back, size, _ = _stored(_unit(embeddings), storage, ivf)
    return back, size


def _stored(x: np.ndarray, storage: str, ivf: Ivf) -> tuple[np.ndarray, int, Any]:
    """:func:`stored` of unit rows ``x``, and the trained FAISS index (None but for PQ)."""
    dim, index = x.shape[1], None
    if storage == "float16":
        back, size = x.astype(np.float16).astype(np.float32), 2 * dim
    elif storage == "int8":
        scale = np.abs(x).max(axis=1, keepdims=True) / 127.0
        scale[scale == 0] = 1.0
        codes = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
        back, size = codes.astype(np.float32) * scale.astype(np.float32), dim + 4
    elif storage in ("pq64", "ivfpq64"):
        index = _pq_index(x, storage, ivf)
        back = index.sa_decode(index.sa_encode(x))
        size = PQ_BYTES + (IVF_ID_BYTES if storage == "ivfpq64" else 0)
    else:
        raise InputError(
            f"gallery storage {storage!r}: expected one of {', '.join(STORAGES)}",
            argument="storage",
        )
    return _unit(back), int(size), index


def _ivf_search(unit: np.ndarray, index: Any) -> Any:
    """An :data:`arcface_lab.core.lowfar.IndexSearch` over ``index`` (an ``IndexIVFPQ``
    trained on the unit rows ``unit``): the gallery's faces added under their indices, the
    probes searched as they are (float32), ``index.nprobe`` lists visited."""

    def search(gallery: np.ndarray, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index.add_with_ids(unit[gallery], gallery.astype(np.int64))
        scores, ids = index.search(unit[probes], k)
        return ids, scores

    return search


def storage_table(
    embeddings: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    storages: Sequence[str] = STORAGES,
    fars: Sequence[float] = (1e-3, 1e-4),
    fpirs: Sequence[float] = (1e-2,),
    nonmated_fraction: float = 0.5,
    ivf: Ivf = Ivf(),
) -> dict[str, Any]:
    """Each storage of the gallery against float32 (see the module docstring).

    A storage that cannot be measured here (``pq64`` without FAISS, too few faces) is a
    row with its reason, never an error: the others are still measured.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    unit = _unit(x)  # as a gallery keeps them
    dim = int(x.shape[1])
    gallery, _ = split_gallery(np.asarray(labels), nonmated_fraction)
    rows: list[dict[str, Any]] = []
    for storage in storages:
        try:
            back, size, index = _stored(unit, storage, ivf)
        except InputError as exc:
            if storage not in STORAGES:
                raise
            rows.append({"storage": storage, "supported": False, "reason": str(exc)})
            continue
        pairs = compare_all_pairs(x, back, labels, fars=fars, max_listed=0)
        if storage == "ivfpq64":
            ident = compare_identification_index(
                x, labels, _ivf_search(unit, index), fpirs=fpirs,
                nonmated_fraction=nonmated_fraction, max_listed=0,
            )  # fmt: skip
        else:
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
                **({"trained_on": int(x.shape[0])} if "pq" in storage else {}),
                **(
                    {"lists": ivf.lists, "probes": min(ivf.probes, ivf.lists)}
                    if storage == "ivfpq64"
                    else {}
                ),
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
