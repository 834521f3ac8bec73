"""``make scale``: images/s of streaming embed, one process against Ray with 1, 2 and N workers.

Every configuration embeds the same faces through the same engine into a fresh shard
folder, and each folder is checked equal to the single-process one, so the figures
compare equal work. Ray's wall time includes starting its actors and building their
engines: that cost is what this shows. The engine artifact is built once beforehand
and shared through a local engine store, so no configuration pays for the build.

    python -m arcface_lab.runs.scale [--model seeded:r18] [--backend onnxruntime]
        [--faces 2048] [--workers 1,2,N] [--out scale.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.files import write_json_atomic
from arcface_lab.core.host import probe
from arcface_lab.data.shards import read_shards

__all__ = ["main", "measure_scale"]


def measure_scale(
    model: str,
    backend: str,
    faces: int,
    workers: list[int],
    shard_size: int = 256,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Run each configuration once; return the table as a dict (see the module docstring)."""
    from arcface_lab.runs.ray_embed import embed_ray
    from arcface_lab.runs.stream import embed_stream
    from arcface_lab.store import open_store

    source = f"synthetic:{faces}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="arcface-scale-") as tmp:
        root = Path(tmp)
        store_dir = root / "store"
        store = open_store(str(store_dir), None, None)
        # the artifact, built once: every configuration below takes it from the store
        embed_stream(model, "synthetic:8", root / "warm", chain=backend, precision=precision,
                     progress=False, strict=True, store=store)  # fmt: skip
        started = time.perf_counter()
        single = embed_stream(model, source, root / "single", chain=backend, precision=precision,
                              shard_size=shard_size, progress=False, strict=True,
                              store=store)  # fmt: skip
        wall = time.perf_counter() - started
        reference = read_shards(root / "single")
        rows.append(_row("single process", 1, faces, wall, single.images_per_s, wall))
        for n in workers:
            started = time.perf_counter()
            result = embed_ray(
                model, source, root / f"ray{n}", chain=backend, precision=precision,
                shard_size=shard_size, workers=n, store={"local": str(store_dir)},
                engine_kwargs={"strict": True}, progress=False,
            )  # fmt: skip
            ray_wall = time.perf_counter() - started
            equal = bool(np.array_equal(read_shards(root / f"ray{n}"), reference))
            rows.append(_row(f"ray, {n} worker(s)", n, faces, ray_wall, result.images_per_s,
                             wall, equal=equal))  # fmt: skip
    host = probe()
    return {
        "model": model,
        "backend": backend,
        "precision": precision,
        "faces": faces,
        "shard_size": shard_size,
        "hardware_class": host.cls,
        "cpu": f"{host.cpu.model} {host.cpu.generation}".strip(),
        "cores": host.cpu.cores,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }


def _row(
    name: str, workers: int, faces: int, wall: float, job_ips: float, single_wall: float,
    equal: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "run": name,
        "workers": workers,
        "wall_s": wall,
        "images_per_s": faces / wall,
        "job_images_per_s": job_ips,
        "vs_single_process": single_wall / wall,
        "equal_to_single_process": equal,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seeded:r18")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--faces", type=int, default=2048)
    parser.add_argument("--workers", default=f"1,2,{os.cpu_count() or 1}")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    table = measure_scale(args.model, args.backend, args.faces, workers)
    print(f"{table['faces']} faces of {table['model']} on {table['backend']} "
          f"({table['hardware_class']}, {table['cores']} cores)")  # fmt: skip
    print(f"{'run':<22} {'wall s':>8} {'images/s':>9} {'vs single':>10}  equal")
    for r in table["rows"]:
        equal = "-" if r["equal_to_single_process"] is None else str(r["equal_to_single_process"])
        print(f"{r['run']:<22} {r['wall_s']:>8.1f} {r['images_per_s']:>9.1f} "
              f"{r['vs_single_process']:>9.2f}x  {equal}")  # fmt: skip
    if args.out:
        write_json_atomic(args.out, table)
    bad = [r["run"] for r in table["rows"] if r["equal_to_single_process"] is False]
    if bad:
        print(f"not equal to the single-process embeddings: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
