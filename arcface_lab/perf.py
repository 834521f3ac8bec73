"""CPU comparison: every engine in its own process, against torch eager FP32 from the same run.

``make bench`` runs ``python -m arcface_lab.perf``. Each engine is created,
validated and timed in a fresh subprocess (thread counts are set once, at its
start: raising them later left MKL and ONNX Runtime at one-thread speed), the
reference first. The parent then compares embeddings (per-face cosine,
verification decision flips at the reference's thresholds) and latencies
(speedup = reference median / engine median, all measured in this run), prints
the table and writes ``bench.json`` and ``bench.md`` into the output folder.

First-run cost is shown apart from steady state: every engine is created twice
over the same engine store, cold (``built``) and again (``local``), with the
build, calibration, compile and import seconds its ``info.details`` records.
By default the store is a fresh scratch folder, removed at the end, so every
run shows both; ``--store`` keeps and reuses one.

Targets come from the params file: accuracy from ``thresholds`` (the INT8
gates are ``thresholds.cosine_min.int8`` and ``thresholds.decision_flips_max``),
speed from ``thresholds.speedup_min`` (``--speedup PRECISION=X`` adds or overrides one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EngineSpec", "main", "model_gmacs", "parse_engines"]

DEFAULT_ENGINES = (
    "torch:fp32,onnxruntime:fp32,openvino:fp32,torch_fast:bf16,openvino:bf16,"
    "openvino:int8:int8_search=false,openvino:int8"
)
#: Faces no engine was calibrated or gated on: the cosine check that cannot be overfitted.
HELD_OUT_SEED, HELD_OUT_IMAGES = 1234, 64


@dataclass(frozen=True)
class EngineSpec:
    backend: str
    precision: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.options)
        return f"{self.backend}/{self.precision}" + (f" ({extra})" if extra else "")


def parse_engines(text: str) -> list[EngineSpec]:
    """``"torch:fp32,openvino:int8:int8_search=false"`` -> specs; the first is the reference.

    Each item is ``backend:precision`` and optional ``:option=value`` engine options
    (values parsed as YAML scalars).
    """
    import yaml

    from arcface_lab.errors import InputError

    specs = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        backend, _, rest = item.partition(":")
        precision, *extra = rest.split(":")
        if not backend or not precision or not all("=" in e for e in extra):
            raise InputError(f"--engines {item!r}: expected backend:precision[:option=value]")
        options = tuple((k, yaml.safe_load(v)) for k, _, v in (e.partition("=") for e in extra))
        specs.append(EngineSpec(backend, precision, options))
    if not specs:
        raise InputError("--engines: expected at least one backend:precision")
    return specs


def model_gmacs(onnx_path: Path) -> float | None:
    """Multiply-accumulates per image (GMAC) of convolutions and matmuls, via OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return None
    from arcface_lab.engines.ov_fp32 import WEIGHTED_OPS, layer_macs

    model = ov.Core().read_model(str(onnx_path))
    shape = model.input(0).get_partial_shape()
    shape[0] = 1
    model.reshape({model.input(0): shape})
    macs = sum(
        layer_macs(op) for op in model.get_ordered_ops() if op.get_type_name() in WEIGHTED_OPS
    )
    return macs / 1e9


# --------------------------------------------------------------------------- worker


def _engine_options(spec: EngineSpec, params: Any, threads: int) -> dict[str, Any]:
    options: dict[str, Any] = dict(params.backends.options.get(spec.backend, {}))
    options.update(spec.options)
    if spec.backend in ("onnxruntime", "openvino"):
        options.setdefault("threads", threads)
    if spec.backend == "openvino" and spec.precision == "int8":
        t = params.thresholds
        options.setdefault("int8_cosine_min", t.cosine_min.get("int8"))
        options.setdefault("int8_flips_max", t.decision_flips_max)
        options.setdefault("int8_enforce_gates", False)  # measured and reported either way
        options.setdefault("calibration", params.data.images)
        options.setdefault("pairs", params.data.pairs)
        options.setdefault("flip", params.data.flip)
    return options


def _measure_engine(
    index: int,
    s: EngineSpec,
    params: Any,
    model_spec: str,
    inputs: dict[str, Path],
    store: Path,
    args: argparse.Namespace,
    out_dir: Path,
) -> dict[str, Any]:
    """One engine through :func:`arcface_lab.bench.run_worker`: created twice, timed once.

    Its embeddings (images, held-out faces, pairs with flip TTA when the params use it)
    go to ``<index>.npz`` in ``out_dir``; a failure is recorded, not raised.
    """
    from arcface_lab.bench import pair_embeddings, run_worker, spec_from_params
    from arcface_lab.errors import ArcfaceLabError

    options = _engine_options(s, params, args.threads)
    spec = spec_from_params(
        params,
        s.backend,
        s.precision,
        inputs,
        model=model_spec,
        batch_sizes=(args.batch,),
        batch_size=args.batch,
        options=options,
        store={"local": str(store)},
        recreate=True,
        threads=args.threads,
    )
    t0 = time.perf_counter()
    try:
        raw, out = run_worker(spec, timeout_s=args.timeout)
    except ArcfaceLabError as exc:
        return {"engine": s.label, "error": str(exc).strip().splitlines()[-1]}
    pairs_a, pairs_b = pair_embeddings(out)
    np.savez(
        out_dir / f"{index}.npz",
        images=out["images"],
        held_out=out["held_out"],
        pairs_a=pairs_a,
        pairs_b=pairs_b,
    )
    return {
        "engine": s.label,
        "options": options,
        "first": {"create_s": raw["setup_s"], "info": raw["info"]},
        "timing": raw["timings"][str(args.batch)],
        "second": raw["second"],
        "peak_rss_mb": raw["memory"]["peak_rss_mb"],
        "process_wall_s": time.perf_counter() - t0,
    }


def _first_cost(details: dict[str, Any]) -> str:
    parts = [
        f"{key[:-2]} {details[key]:.1f}"
        for key in ("build_s", "calibration_s", "compile_s", "import_s")
        if isinstance(details.get(key), int | float) and details[key] > 0.05
    ]
    return ", ".join(parts) or "-"


def _origin(info: dict[str, Any]) -> str:
    art = info.get("artifact")
    return art["origin"] if art else "-"


def _compare(results: list[dict[str, Any]], out_dir: Path, same: np.ndarray) -> None:
    from arcface_lab.validate import compare_verification, cosine_drift

    ref_result = results[0]
    if "timing" not in ref_result:
        return
    ref = np.load(out_dir / f"{ref_result['index']}.npz")
    ref_ms = ref_result["timing"]["median_ms"]
    for r in results:
        if "timing" not in r:
            continue
        emb = np.load(out_dir / f"{r['index']}.npz")
        drift = cosine_drift(ref["images"], emb["images"])
        ver = compare_verification(
            ref["pairs_a"], ref["pairs_b"], emb["pairs_a"], emb["pairs_b"], same
        )
        r["drift"] = {k: v for k, v in drift.to_dict().items() if k != "per_face"}
        r["held_out_cosine_min"] = cosine_drift(ref["held_out"], emb["held_out"]).min
        r["verification"] = {k: ver[k] for k in ("accuracy_delta", "decision_flips")}
        r["speedup"] = ref_ms / r["timing"]["median_ms"]


def _table(results: list[dict[str, Any]], gflop: float | None, batch: int) -> list[str]:
    head = (
        f"| engine | b{batch} median ms | img/s | GFLOP/s | x torch fp32 | cos min "
        "| held-out cos min | flips | acc delta | 1st create s (origin) | 1st-run cost s "
        "| 2nd create s (origin) |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        if "error" in r or "timing" not in r:
            rows.append(f"| {r['engine']} | unavailable: {r.get('error', '?')} |" + " |" * 10)
            continue
        t = r["timing"]
        first, second = r["first"], r["second"]
        gf = f"{gflop * batch / (t['median_ms'] / 1e3):.0f}" if gflop else "-"
        rows.append(
            f"| {r['engine']} | {t['median_ms']:.0f} | {t['throughput_ips']:.1f} | {gf} "
            f"| {r['speedup']:.2f} | {r['drift']['min']:.5f} | {r['held_out_cosine_min']:.5f} "
            f"| {r['verification']['decision_flips']} "
            f"| {r['verification']['accuracy_delta']:+.3f} "
            f"| {first['create_s']:.1f} ({_origin(first['info'])}) "
            f"| {_first_cost(first['info']['details'])} "
            f"| {second['create_s']:.1f} ({_origin(second['info'])}) |"
        )
    return rows


def _targets(results: list[dict[str, Any]], params: Any, speedup: dict[str, float]) -> list[str]:
    t = params.thresholds
    lines = []
    flips_max = t.decision_flips_max
    for r in results[1:]:
        if "speedup" not in r:
            continue
        precision = r["precision"]
        checks = []
        if precision in t.cosine_min:
            ok = r["drift"]["min"] >= t.cosine_min[precision]
            checks.append(
                f"cos min {r['drift']['min']:.5f} >= {t.cosine_min[precision]} "
                f"{'ok' if ok else 'FAIL'}"
            )
            ok = r["held_out_cosine_min"] >= t.cosine_min[precision]
            checks.append(
                f"held-out cos min {r['held_out_cosine_min']:.5f} {'ok' if ok else 'FAIL'}"
            )
        if precision in t.accuracy_delta_max:
            delta = abs(r["verification"]["accuracy_delta"])
            ok = delta < t.accuracy_delta_max[precision]
            checks.append(
                f"|acc delta| {delta:.3f} < {t.accuracy_delta_max[precision]} "
                f"{'ok' if ok else 'FAIL'}"
            )
        if flips_max is not None:
            ok = r["verification"]["decision_flips"] <= flips_max
            flips = r["verification"]["decision_flips"]
            checks.append(f"flips {flips} <= {flips_max} {'ok' if ok else 'FAIL'}")
        target = speedup.get(precision, t.speedup_min.get(precision))
        if target is not None:
            ok = r["speedup"] >= target
            checks.append(f"speedup {r['speedup']:.2f} >= {target} {'ok' if ok else 'FAIL'}")
        lines.append(f"- {r['engine']}: " + "; ".join(checks))
        int8 = r["first"]["info"]["details"].get("int8")
        if int8:
            res = int8.get("result") or {}
            lines.append(
                f"  - int8 search: gates {'passed' if int8['passed'] else 'FAILED'} "
                f"(validation cos min {res.get('cosine_min', float('nan')):.5f}, flips "
                f"{res.get('decision_flips')}); {int8['int8_layers']} layers INT8 "
                f"({100 * (int8.get('int8_macs_fraction') or 0):.0f}% of MACs), "
                f"{len(int8['kept_float_layers'])} kept in BF16, "
                f"{len(int8.get('fp32_layers') or [])} in FP32"
                + (f"; {int8['failure']}" if int8.get("failure") else "")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arcface_lab.perf", description=__doc__)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--model", help="override params model.spec")
    parser.add_argument("--engines", default=DEFAULT_ENGINES, help="backend:precision,...")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--store", help="engine store folder to keep (default: fresh scratch)")
    parser.add_argument("--out", help="output folder (default: reports/bench-<time>)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per engine")
    parser.add_argument(
        "--speedup",
        action="append",
        default=[],
        metavar="PRECISION=X",
        help="speed target when params set no thresholds.speedup_min for it",
    )
    args = parser.parse_args(argv)

    from arcface_lab.bench import pair_arrays, saved_inputs
    from arcface_lab.data import images_from_spec, synthetic_faces
    from arcface_lab.models.source import resolve_model
    from arcface_lab.pairs import load_pairs
    from arcface_lab.params import load_params

    params = load_params(args.params)
    specs = parse_engines(args.engines)
    speedup: dict[str, float] = {}
    for item in args.speedup:
        key, _, value = item.partition("=")
        speedup[key] = float(value)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out or f"reports/bench-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = None if args.store else tempfile.mkdtemp(prefix="store-", dir=out_dir)
    store = Path(args.store or str(scratch))
    spec = args.model or params.model.spec
    started = time.perf_counter()
    pre = params.model.preprocess()
    model = resolve_model(spec, arch=params.model.arch, preprocess=pre, seed=params.model.seed)
    t0 = time.perf_counter()
    onnx = model.onnx_path()
    export_s = time.perf_counter() - t0
    gmacs = model_gmacs(onnx)
    gflop = 2 * gmacs if gmacs else None
    pairs = load_pairs(params.data.pairs, pre.size)
    arrays = {
        "images": images_from_spec(params.data.images, pre.size)[0],
        "held_out": synthetic_faces(HELD_OUT_IMAGES, seed=HELD_OUT_SEED, size=pre.size),
        **pair_arrays(pairs, params.data.flip),
    }
    print(
        f"bench: {spec} ({gflop or 0:.2f} GFLOP/image), batch {args.batch}, "
        f"{args.threads} threads, {len(specs)} engines, store {store}",
        flush=True,
    )
    results = []
    with saved_inputs(arrays, out_dir) as inputs:
        for index, engine_spec in enumerate(specs):
            result = _measure_engine(index, engine_spec, params, spec, inputs, store, args, out_dir)
            result["index"] = index
            result["precision"] = engine_spec.precision
            results.append(result)
            status = result.get("error") or f"{result['timing']['median_ms']:.0f} ms"
            wall = result.get("process_wall_s", 0)
            print(f"  {engine_spec.label}: {status} ({wall:.0f} s)", flush=True)
    _compare(results, out_dir, pairs.same)
    table = _table(results, gflop, args.batch)
    targets = _targets(results, params, speedup)
    from arcface_lab.pipeline import cpu_model

    cpu = cpu_model()
    header = [
        f"machine: {cpu}, {os.cpu_count()} cores; model {spec}, "
        f"{gflop or 0:.2f} GFLOP ({gmacs or 0:.2f} GMAC) per image; batch {args.batch}; "
        f"reference {specs[0].label}; ONNX export {export_s:.1f} s",
    ]
    text = "\n".join([*header, "", *table, "", "targets:", *targets])
    print(text)
    payload = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads},
        "model": {"spec": spec, "gmacs_per_image": gmacs, "onnx_export_s": export_s},
        "params": args.params,
        "batch": args.batch,
        "results": results,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }
    (out_dir / "bench.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)  # engines of several hundred MB each
    (out_dir / "bench.md").write_text(text + "\n")
    print(f"wrote {out_dir / 'bench.json'} ({payload['wall_s']:.0f} s)")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
