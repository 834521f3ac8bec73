"""The main job's scale section: a labelled set through the chosen engine, the low-FAR table.

With ``scale.faces`` in the params, a run embeds that many labelled synthetic faces
(``faces_per_identity`` images each) through the reference and through the engine
optimize chose, each streamed into shards (:mod:`arcface_lab.runs.stream`), and writes
``scale.json``: per engine its throughput and peak memory, then all-pairs TAR at each
FAR and 1:N identification for both, their deltas and the decisions that flip at the
reference's thresholds (:mod:`arcface_lab.core.lowfar`). ``thresholds.tar_delta_max``
makes the TAR delta at ``scale.gate_far`` a verdict check. The mixed comparisons (a
gallery enrolled with the reference, probes from the engine) give the ``reenrolment``
block: whether switching to the engine needs the gallery enrolled again, judged by
``params.reenrolment`` (:func:`arcface_lab.measure.acceptance.reenrolment`).

The faces are synthetic and the seeded models untrained: the TAR itself identifies
nothing; the flips and the deltas say whether the engine is still the reference.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.config.params import Params
from arcface_lab.core.host import reset_rss_high_water, rss_high_water_mb
from arcface_lab.core.lowfar import compare_all_pairs, compare_identification
from arcface_lab.data.images import RUN_IMAGE_SEED
from arcface_lab.data.shards import read_shards
from arcface_lab.data.stream import ImageSource, NpySource, SyntheticSource
from arcface_lab.engines.registry import create_engine
from arcface_lab.measure.acceptance import Check, reenrolment
from arcface_lab.measure.optimize import engine_options, reference_backend
from arcface_lab.measure.storage import Ivf, storage_table
from arcface_lab.runs.stream import embed_to_shards

__all__ = ["SCALE_SEED", "scale_check", "scale_json"]

#: Seed of the scale section's faces: not the validation's, not the held-out's.
SCALE_SEED = RUN_IMAGE_SEED + 1000


def _embed(
    label: str, backend: str, precision: str, options: dict[str, Any], params: Params,
    model: Any, source: ImageSource, folder: Path,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Stream ``source`` through one engine; its embeddings and what it cost."""
    from arcface_lab.store import open_store

    store = open_store(**{**params.store.settings(), "strict": params.backends.strict})
    with create_engine(
        backend, model, precision=precision, strict=True, store=store,
        backend_options={backend: options}, batch_size=params.backends.batch_size,
    ) as engine:  # fmt: skip
        reset = reset_rss_high_water()
        result = embed_to_shards(
            engine, source, folder, model, shard_size=params.scale.shard_size, progress=False
        )
        peak = rss_high_water_mb()
    return read_shards(folder), {
        "engine": label,
        "faces": result.faces,
        "seconds": result.seconds,
        "images_per_s": result.images_per_s or None,
        "engine_images_per_s": result.faces / result.embed_s if result.embed_s > 0 else None,
        "read_s": result.read_s,
        "peak_rss_mb": peak,
        "peak_rss_scope": "while embedding" if reset else "whole run process",
    }


def _materialize(source: SyntheticSource, path: Path) -> NpySource:
    """The synthetic set written once to ``path`` (crops made on every core), read back by offset.

    Both engines then read the same bytes, and neither pays for making them: on a GPU the
    crops (made on the CPU, ~700 a second a core) would otherwise set the pace.
    """
    array = np.lib.format.open_memmap(path, "w+", np.uint8, (len(source), *source.size, 3))
    spans = [(s, min(s + 1024, len(source))) for s in range(0, len(source), 1024)]
    workers = max(1, min(len(spans), os.cpu_count() or 1))
    if workers == 1:
        for start, stop in spans:
            array[start:stop] = source.read(start, stop)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: this process may hold the thread pools of engine libraries
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = [
                (source.n, source.seed, source.per, start, stop, source.size)
                for start, stop in spans
            ]
            for (start, stop), crops in zip(spans, pool.map(_slice, jobs), strict=True):
                array[start:stop] = crops
    array.flush()
    del array
    return NpySource(path, source.size)


def _slice(job: tuple[int, int, int, int, int, tuple[int, int]]) -> np.ndarray:
    n, seed, per, start, stop, size = job
    return SyntheticSource(n, seed, size, faces_per_identity=per).read(start, stop)


def scale_json(params: Params, model: Any, opt: Any, threads: int = 0) -> dict[str, Any]:
    """``scale.json`` for a run (see the module docstring); ``{"skipped": why}`` without one."""
    scale = params.scale
    chosen = opt.chosen
    if chosen is None:
        return {"skipped": "no engine was chosen: no candidate passed every gate"}
    per = scale.faces_per_identity
    source = SyntheticSource(scale.faces, SCALE_SEED, model.preprocess.size, faces_per_identity=per)
    labels = np.arange(scale.faces) // per
    ref_backend = reference_backend(model, params.backends.reference)
    cand = chosen.candidate
    options = engine_options(cand.backend, cand.precision, params, threads)
    options.update(dict(cand.options))
    with tempfile.TemporaryDirectory(prefix="arcface-scale-") as tmp:
        started = time.perf_counter()
        crops = _materialize(source, Path(tmp) / "faces.npy")
        made_s = time.perf_counter() - started
        ref, ref_cost = _embed(
            f"{ref_backend}/fp32", ref_backend, "fp32",
            engine_options(ref_backend, "fp32", params, threads), params, model, crops,
            Path(tmp) / "reference",
        )  # fmt: skip
        emb, cost = _embed(
            cand.label, cand.backend, cand.precision, options, params, model, crops,
            Path(tmp) / "engine",
        )  # fmt: skip
    pairs = compare_all_pairs(ref, emb, labels, fars=scale.fars, max_listed=10)
    ident = compare_identification(ref, emb, labels, fpirs=scale.fpirs, max_listed=10)
    out: dict[str, Any] = {
        "faces": scale.faces,
        "identities": int(labels[-1]) + 1,
        "faces_per_identity": per,
        "source": f"synthetic:{scale.faces} (seed {SCALE_SEED}, {per} per identity)",
        "data_kind": "synthetic",
        "crops_made_s": made_s,
        "reference": ref_cost,
        "engine": cost,
        "speedup": (
            ref_cost["seconds"] / cost["seconds"]
            if cost["seconds"] and ref_cost["seconds"]
            else None
        ),
        "cosine_min": float(np.min(np.sum(ref * emb, axis=1))),
        "gate_far": scale.gate_far,
        "all_pairs": pairs,
        "identification": ident,
        "reenrolment": reenrolment(pairs.get("mixed"), ident.get("mixed"), params.reenrolment),
    }
    if scale.gallery_storage:
        out["gallery_storage"] = storage_table(
            emb, labels, scale.gallery_storage, params.reenrolment.fars,
            params.reenrolment.fpirs, ivf=Ivf(scale.ivf_lists, scale.ivf_probes),
        )  # fmt: skip
    return out


def scale_check(scale: dict[str, Any], params: Params) -> Check | None:
    """The verdict row for ``thresholds.tar_delta_max`` (None when no target is set)."""
    limit = params.thresholds.tar_delta_max
    if limit is None:
        return None
    far = params.scale.gate_far
    metric = f"scale |TAR delta| @ FAR {far:g}"
    target = f"<= {limit:g}"
    if "skipped" in scale:
        return Check(metric, target, None, False, note=f"not measured: {scale['skipped']}")
    point = next((p for p in scale["all_pairs"]["points"] if p["far"] == far), None)
    if point is None:
        return Check(metric, target, None, False, note=f"FAR {far:g} is not in scale.fars")
    if not point["supported"]:
        return Check(metric, target, None, False, note=f"not measured: {point['reason']}")
    delta = abs(float(point["tar_delta"]))
    note = f"{point['decision_flips']} decision flip(s) at the reference's threshold"
    return Check(metric, target, delta, delta <= limit, note=note)
