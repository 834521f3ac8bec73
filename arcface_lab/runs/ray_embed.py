"""The streaming embed job on a Ray cluster: Ray Data, one engine per actor, the same shards.

:func:`embed_ray` is :func:`~arcface_lab.runs.stream.embed_to_shards` spread over
machines. The driver owns the shard folder (its lock and manifest) and turns the shards
still to make into a Ray Dataset of ``(index, start, stop)`` rows; ``map_batches`` sends
them, one shard per call, to a pool of actors. Each actor builds its engine once
(through the engine store, so with a shared store a cluster builds each artifact once),
reads its faces straight from the input (a path every node sees, or ``synthetic:N``),
embeds them and writes the shard file atomically beside the manifest; only the shard's
record travels back. The driver checks each file's sha256 and records it as results
arrive, so a driver stopped midway resumes like a single-process run.

A worker killed midway loses nothing and duplicates nothing: Ray restarts the actor
and runs the shard again (Ray Data's defaults for an actor pool: ``max_restarts`` and
``max_task_retries`` unlimited; an error raised by the job itself is not retried), the
second write of a
shard is the same bytes under the same name, and the manifest keys shards by index.
The embeddings equal the single-process run's, in input order.

Pointing it at a cluster: ``address="ray://HEAD:10001"`` (Ray Client) or ``"auto"`` on a
node of the cluster; the input and the output folder must be on storage every node
mounts, and ``store`` should name a shared engine store (``s3://...``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.data.shards import SHARD_FIELDS, ShardWriter, write_shard
from arcface_lab.engines.registry import parse_chain
from arcface_lab.errors import BackendUnavailable, InputError
from arcface_lab.models.source import resolve_model
from arcface_lab.runs.stream import (
    DEFAULT_SHARD_SIZE,
    StreamResult,
    embed_span,
    job_of,
    open_input,
)

__all__ = ["embed_ray"]


class ShardEmbedder:
    """A Ray Data actor: one engine, built once; each call makes whole shards."""

    def __init__(
        self,
        model: str,
        source: str,
        out: str,
        chain: list[str],
        precision: str,
        normalize: bool,
        engine_kwargs: dict[str, Any],
        store: dict[str, Any] | None,
    ) -> None:
        from arcface_lab.engines.registry import create_engine

        kwargs = dict(engine_kwargs)
        if store and (store.get("local") or store.get("s3")):
            from arcface_lab.store import open_store

            endpoint = store.get("endpoint") if store.get("s3") else None  # else the input's
            kwargs["store"] = open_store(store.get("local"), store.get("s3"), endpoint)
        self.model = resolve_model(model)
        endpoint = (store or {}).get("endpoint")
        self.source = open_input(source, self.model.preprocess.size, endpoint)
        self.out = Path(out)
        self.normalize = normalize
        self.engine = create_engine(chain, self.model, precision=precision, **kwargs)
        self.engine.__enter__()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        records = []
        for index, start, stop in zip(batch["index"], batch["start"], batch["stop"], strict=True):
            a, b = int(start), int(stop)
            emb = embed_span(self.engine, self.source, a, b, self.normalize)
            records.append(write_shard(self.out, int(index), a, b, emb, self.engine.info.backend))
        return {k: np.array([r[k] for r in records]) for k in (*SHARD_FIELDS, "dim")}


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendUnavailable(
            "ray: Ray Data is not installed: pip install 'arcface_lab[ray]'"
        ) from None
    return ray


def embed_ray(
    model: str | os.PathLike[str],
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    chain: str | Sequence[str] = "auto",
    precision: str = "fp32",
    shard_size: int = DEFAULT_SHARD_SIZE,
    normalize: bool = True,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float | None = None,
    address: str | None = None,
    store: dict[str, Any] | None = None,
    engine_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> StreamResult:
    """Embed ``source`` into shards under ``out`` with a pool of Ray actors.

    Args:
        model, source: as for :func:`~arcface_lab.runs.stream.embed_stream`, given as
            text (each actor resolves and opens them itself).
        workers: actors in the pool (default: the cluster's CPUs / ``cpus_per_worker``).
        gpus_per_worker: GPUs per actor (default: 1 when the cluster has GPUs, else 0).
        address: a running cluster (``"auto"``, ``"ray://HOST:10001"``); None starts or
            joins a local instance on 127.0.0.1.
        store: ``{"local": DIR, "s3": "s3://BUCKET/PREFIX", "endpoint": URL}`` for the
            actors' engine store.
        engine_kwargs: the rest of :func:`create_engine`'s keywords (``strict``,
            ``batch_size``, ``device``, ...).
        progress: Ray Data's progress bars (stderr).
    """
    ray = _ray()
    model_text, source_text = os.fspath(model), os.fspath(source)
    resolved = resolve_model(model_text)
    opened = open_input(source_text, resolved.preprocess.size, (store or {}).get("endpoint"))
    names = parse_chain(chain, (engine_kwargs or {}).get("device"))
    job = job_of(opened, resolved, names, precision, normalize)
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not ray.is_initialized():
        if address is None:
            ray.init(
                address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                log_to_driver=False,
            )  # fmt: skip
        else:
            ray.init(address=address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    cluster = ray.cluster_resources()
    gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if cluster.get("GPU") else 0.0)
    pool = workers or max(1, int(cluster.get("CPU", 1) // cpus_per_worker))
    if pool < 1:
        raise InputError(f"workers: expected >= 1, got {workers}", argument="workers")
    started = time.perf_counter()
    folder = Path(out).resolve()
    embedded = 0
    with ShardWriter(folder, job, len(opened), shard_size) as writer:
        pending = writer.pending()
        if pending:
            rows = [{"index": k, "start": a, "stop": b} for k, a, b in pending]
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                ShardEmbedder,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(pool, len(rows))),
                num_cpus=cpus_per_worker,
                num_gpus=gpus,
                fn_constructor_kwargs={
                    "model": model_text,
                    "source": source_text,
                    "out": str(folder),
                    "chain": names,
                    "precision": precision,
                    "normalize": normalize,
                    "engine_kwargs": dict(engine_kwargs or {}),
                    "store": store,
                },
            )
            for row in ds.iter_rows():
                writer.record({k: _plain(v) for k, v in row.items()})
                embedded += int(row["count"])
        manifest = writer.finish()
        resumed = writer.resumed
    seconds = time.perf_counter() - started
    backends = sorted({str(s.get("backend")) for s in manifest["shards"]})
    engine = {
        "backend": ",".join(backends),
        "precision": precision,
        "workers": pool,
        "gpus_per_worker": gpus,
        "ray": ray.__version__,
    }
    # read and embed time is spent in the actors, where the driver does not see it
    return StreamResult.of(out, manifest, resumed, embedded, seconds, engine)


def _plain(value: Any) -> Any:
    """A numpy scalar from a Ray row as the Python value the manifest stores."""
    return value.item() if isinstance(value, np.generic) else value
