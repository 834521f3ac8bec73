"""Streaming embedding: any number of faces through one engine, in bounded memory, resumable.

:func:`embed_to_shards` reads an :class:`~arcface_lab.data.stream.ImageSource` a slice
at a time, embeds each slice through an engine and writes the embeddings in shards
with a manifest (:mod:`arcface_lab.data.shards`). Memory holds one slice of crops and
one shard of embeddings, whatever the input's size. A job that is stopped (Ctrl-C,
SIGKILL, a full disk) and started again keeps every shard it verified and makes the
rest; nothing half-written is ever listed as done.

Example::

    from arcface_lab.runs.stream import embed_stream

    result = embed_stream("seeded:r18", "synthetic:100000", "emb/", chain="onnxruntime")
    result.images_per_s          # this run's throughput
    read_shards("emb/")          # (100000, 512) float32, in input order
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.host import rss_high_water_mb
from arcface_lab.data.shards import ShardWriter
from arcface_lab.data.stream import ImageSource, open_source
from arcface_lab.engines.base import Engine
from arcface_lab.engines.registry import create_engine, parse_chain
from arcface_lab.errors import InputError
from arcface_lab.models.source import ModelSource, resolve_model

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "SpanTimes",
    "StreamResult",
    "embed_span",
    "embed_stream",
    "embed_to_shards",
    "job_of",
    "open_input",
]

log = logging.getLogger(__name__)

#: Faces per shard: 4096 x 512 float32 is an 8 MiB file; a resumed job redoes at most one.
DEFAULT_SHARD_SIZE = 4096
#: Crops read at once (38 KiB each at 112x112): a slice is never more than this many.
READ_SIZE = 256


@dataclass
class StreamResult:
    """What one streaming run did."""

    folder: str
    faces: int
    dim: int
    shards: int
    resumed_shards: int
    embedded_now: int
    seconds: float
    images_per_s: float
    #: Of ``seconds``: reading (or making) the crops, and inside the engine.
    read_s: float
    embed_s: float
    peak_rss_mb: float
    engine: dict[str, Any]

    @classmethod
    def of(
        cls, out: str | os.PathLike[str], manifest: dict[str, Any], resumed: int, embedded: int,
        seconds: float, engine: dict[str, Any], read_s: float = 0.0, embed_s: float = 0.0,
    ) -> StreamResult:  # fmt: skip
        """The result of a run that wrote ``manifest`` (complete) into ``out``."""
        return cls(
            folder=str(out),
            faces=int(manifest["total"]),
            dim=int(manifest["dim"]),
            shards=len(manifest["shards"]),
            resumed_shards=resumed,
            embedded_now=embedded,
            seconds=seconds,
            images_per_s=embedded / seconds if embedded and seconds > 0 else 0.0,
            read_s=read_s,
            embed_s=embed_s,
            peak_rss_mb=peak_rss_mb(),
            engine=engine,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_input(
    spec: str | os.PathLike[str], size: tuple[int, int] = (112, 112), s3_endpoint: str | None = None
) -> ImageSource:
    """:func:`~arcface_lab.data.stream.open_source`, and ``s3://BUCKET/PREFIX`` of image objects
    (:class:`~arcface_lab.store.s3_source.S3Source`, the engine store's S3 settings)."""
    if isinstance(spec, str) and spec.startswith("s3://"):
        from arcface_lab.store.s3_source import S3Source

        return S3Source(spec, size, endpoint_url=s3_endpoint)
    return open_source(spec, size)


def job_of(
    source: ImageSource,
    model: ModelSource,
    chain: Sequence[str],
    precision: str,
    normalize: bool,
) -> dict[str, Any]:
    """What a shard folder's embeddings are of; a resumed job must match it exactly.

    The engine is the backend chain asked for; the backend that made each shard is in
    its record, and one folder never mixes two (see :meth:`ShardWriter.record`).
    """
    return {
        "input": source.fingerprint(),
        "model": {"spec": model.spec, "sha256": model.sha256()},
        "preprocess": model.preprocess.to_dict(),
        "engine": {"chain": list(chain), "precision": precision},
        "normalized": normalize,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MiB).

    Linux's ``VmHWM`` where it exists (``ru_maxrss`` would carry a parent's size across
    ``exec``); elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    hwm = rss_high_water_mb()
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc="embed", unit="img", unit_scale=True,
        file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
    )  # fmt: skip


@dataclass
class SpanTimes:
    """Seconds one or more :func:`embed_span` calls spent reading crops and in the engine."""

    read_s: float = 0.0
    embed_s: float = 0.0


def embed_span(
    engine: Engine,
    source: ImageSource,
    start: int,
    stop: int,
    normalize: bool = True,
    times: SpanTimes | None = None,
    on_slice: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Faces ``start:stop`` of ``source`` embedded, :data:`READ_SIZE` crops held at a time.

    ``times`` (when given) accumulates the seconds spent reading and embedding;
    ``on_slice`` is called with each slice's face count (a progress bar).
    """
    parts = []
    for s in range(start, stop, READ_SIZE):
        e = min(s + READ_SIZE, stop)
        t0 = time.perf_counter()
        crops = source.read(s, e)
        t1 = time.perf_counter()
        parts.append(engine.embed(crops, normalize=normalize))
        if times is not None:
            times.read_s += t1 - t0
            times.embed_s += time.perf_counter() - t1
        if on_slice is not None:
            on_slice(e - s)
    return np.concatenate(parts)


def embed_to_shards(
    engine: Engine,
    source: ImageSource,
    out: str | os.PathLike[str],
    model: ModelSource | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    normalize: bool = True,
    progress: bool = True,
    chain: Sequence[str] | None = None,
) -> StreamResult:
    """Embed every face of ``source`` through ``engine`` into shards under ``out``.

    ``model`` is the engine's model (default ``engine.model``) and ``chain`` the backend
    chain the engine was made from (default: its own backend), both recorded in the job.
    Resumes a folder holding the same job; refuses one holding another (see
    :mod:`arcface_lab.data.shards`). Progress (images/s, ETA) goes to stderr.
    """
    model = model or engine.model
    names = list(chain) if chain else [engine.info.backend]
    job = job_of(source, model, names, engine.info.precision, normalize)
    started = time.perf_counter()
    embedded = 0
    times = SpanTimes()
    with ShardWriter(Path(out), job, len(source), shard_size) as writer:
        bar = _progress(len(source), writer.done_faces, progress)
        try:
            for index, start, stop in writer.pending():
                emb = embed_span(
                    engine, source, start, stop, normalize, times, bar.update if bar else None
                )
                writer.write(index, emb, engine.info.backend)
                embedded += stop - start
        finally:
            if bar is not None:
                bar.close()
        manifest = writer.finish()
        resumed = writer.resumed
    seconds = time.perf_counter() - started
    result = StreamResult.of(
        out, manifest, resumed, embedded, seconds, engine.info.to_dict(), times.read_s,
        times.embed_s,
    )  # fmt: skip
    log.info("%s: %d faces in %d shard(s), %.1f images/s", out, result.faces, result.shards,
             result.images_per_s)  # fmt: skip
    return result


def embed_stream(
    model: str | os.PathLike[str] | ModelSource,
    source: str | os.PathLike[str] | ImageSource,
    out: str | os.PathLike[str],
    chain: str = "auto",
    precision: str = "fp32",
    shard_size: int = DEFAULT_SHARD_SIZE,
    normalize: bool = True,
    progress: bool = True,
    **engine_kwargs: Any,
) -> StreamResult:
    """:func:`embed_to_shards` with the model resolved, the input opened, the engine made.

    ``engine_kwargs`` go to :func:`~arcface_lab.engines.registry.create_engine`
    (``strict``, ``device``, ``batch_size``, ``store``, ...).
    """
    resolved = model if isinstance(model, ModelSource) else resolve_model(os.fspath(model))
    if isinstance(source, (str, os.PathLike)):
        source = open_input(
            source, resolved.preprocess.size, engine_kwargs.pop("s3_endpoint", None)
        )
    elif tuple(source.size) != tuple(resolved.preprocess.size):
        raise InputError(
            f"source: {source.name} holds {source.size} crops; the model takes "
            f"{resolved.preprocess.size}",
            argument="source",
        )
    names = parse_chain(chain, engine_kwargs.get("device"))
    with create_engine(names, resolved, precision=precision, **engine_kwargs) as engine:
        return embed_to_shards(
            engine, source, out, resolved, shard_size, normalize, progress, chain=names
        )
