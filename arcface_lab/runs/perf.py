"""CPU comparison (``make bench``): optimize's candidates, each created twice, with first-run costs.

``make bench`` runs ``python -m arcface_lab.runs.perf``:
:func:`arcface_lab.measure.optimize.optimize` over the params' candidates that are native on
this host (so an AVX2 machine never spends its time on emulated BF16), each engine in a
fresh process against torch eager FP32 from the same run, at one batch size (``--batch``,
default 32). Each engine is created twice over the same engine store, cold (``built``) and
again (``local``), with the build, calibration, compile and import seconds its
``info.details`` records, so first-run cost is shown apart from steady state. By default the
store is a fresh scratch folder, removed at the end; ``--store`` keeps and reuses one.

The table adds what optimize does not print: GFLOP/s (convolution and matmul MACs
counted with OpenVINO), images/s and both creations. Gates come from the params'
``thresholds``; the speed target and the hardware floor from
``thresholds.speed_targets`` for this host's class (``--host-class`` plans for
another class, for the decision logic only: the kernels are this machine's).
``--engines backend:precision[:option=value],...`` measures exactly those instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab.core.files import write_json_atomic, write_text_atomic
from arcface_lab.core.speed import format_interval

if TYPE_CHECKING:
    from arcface_lab.config.params import Params
    from arcface_lab.core.host import Host
    from arcface_lab.measure.optimize import Candidate, CandidateResult, OptimizeResult

__all__ = ["main", "model_gmacs", "parse_engines"]


def parse_engines(text: str) -> list[Candidate]:
    """``"onnxruntime:fp32,openvino:int8:int8_search=false"`` -> candidates, as this host runs them.

    Each item is ``backend:precision`` and optional ``:option=value`` engine options
    (values parsed as YAML scalars).
    """
    import yaml

    from arcface_lab.core.host import probe
    from arcface_lab.engines.registry import get_backend
    from arcface_lab.errors import InputError
    from arcface_lab.measure.optimize import Candidate

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        backend, _, rest = item.partition(":")
        precision, *extra = rest.split(":")
        if not backend or not precision or not all("=" in e for e in extra):
            raise InputError(f"--engines {item!r}: expected backend:precision[:option=value]")
        options = tuple((k, yaml.safe_load(v)) for k, _, v in (e.partition("=") for e in extra))
        support = get_backend(backend).support(precision, probe())
        if support.status == "emulated":  # asked for by name: measured, and labelled
            support = dataclasses.replace(support, status="native")
        out.append(Candidate(backend, precision, options, support))
    if not out:
        raise InputError("--engines: expected at least one backend:precision")
    return out


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


def conv_floors(
    precisions: tuple[str, ...], threads: int, repeats: int = 5
) -> dict[str, float | str]:
    """This machine's peak (GFLOP/s, GOP/s for INT8) on a 256x256 3x3 convolution, per precision.

    One convolution of a 32x256x28x28 batch (29.6 GFLOP), compiled by OpenVINO's CPU
    plugin with the precision's hint (INT8: FakeQuantize on activations and weights, the
    pattern OpenVINO lowers to an INT8 convolution); the best of ``repeats`` runs. A
    precision the CPU cannot run natively is skipped with the reason.
    """
    import openvino as ov
    import openvino.opset13 as ops

    from arcface_lab.core.host import probe

    rng = np.random.default_rng(0)
    shape, out_ch = (32, 256, 28, 28), 256
    flops = 2 * shape[0] * shape[2] * shape[3] * out_ch * shape[1] * 9
    x = rng.uniform(0, 4, shape).astype(np.float32)
    core = ov.Core()
    floors: dict[str, float | str] = {}
    for precision in precisions:
        if precision == "bf16" and not probe().cpu.native_bf16:
            floors[precision] = "not native on this CPU"
            continue
        param = ops.parameter(list(shape), np.float32)
        w = (rng.standard_normal((out_ch, 256, 3, 3)) * 0.05).astype(np.float32)
        data, kernel = param.output(0), ops.constant(w).output(0)
        if precision == "int8":
            lo, hi = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
            data = ops.fake_quantize(data, lo, hi, lo, hi, 256).output(0)
            wlo, whi = ops.constant(np.float32(-0.2)), ops.constant(np.float32(0.2))
            kernel = ops.fake_quantize(kernel, wlo, whi, wlo, whi, 255).output(0)
        conv = ops.convolution(data, kernel, [1, 1], [1, 1], [1, 1], [1, 1])
        model = ov.Model([conv], [param])
        hint = "bf16" if precision == "bf16" else "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = core.compile_model(model, "CPU", config).create_infer_request()
        request.infer({0: x})  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            request.infer({0: x})
            best = min(best, time.perf_counter() - t0)
        floors[precision] = flops / best / 1e9
    return floors


def _floor_lines(
    floors: dict[str, float | str], gflop: float | None, batch: int, ref_ms: float | None
) -> list[str]:
    lines = []
    for precision, peak in floors.items():
        if isinstance(peak, str):
            lines.append(f"- {precision}: {peak}")
            continue
        unit = "GOP/s" if precision == "int8" else "GFLOP/s"
        text = f"- {precision}: a 256x256 3x3 convolution peaks at {peak:.0f} {unit}"
        if gflop:
            best_ms = gflop * batch / peak * 1e3
            text += f"; the model at batch {batch} can reach {best_ms:.0f} ms"
            if ref_ms:
                text += f" ({ref_ms / best_ms:.2f}x the reference's {ref_ms:.0f} ms)"
        lines.append(text)
    return lines


def _first_cost(details: dict[str, Any]) -> str:
    parts = [
        f"{key[:-2]} {details[key]:.1f}"
        for key in ("build_s", "calibration_s", "search_s", "compile_s", "import_s")
        if isinstance(details.get(key), int | float) and details[key] > 0.05
    ]
    return ", ".join(parts) or "-"


def _origin(info: dict[str, Any] | None) -> str:
    art = (info or {}).get("artifact")
    return art["origin"] if art else "-"


def _row(r: CandidateResult, gflop: float | None, batch: int) -> str:
    label = r.candidate.label
    if not r.ran:
        return f"| {label} | {r.status}: {r.reason} |" + " |" * 11
    assert r.latency_ms is not None and r.info is not None and r.worker is not None
    median = r.latency_ms["median"]
    second = r.worker.get("second") or {}
    gf = f"{gflop * batch / (median / 1e3):.0f}" if gflop else "-"
    return (
        f"| {label} | {r.status} | {median:.0f} | {batch / (median / 1e3):.1f} | {gf} "
        f"| {r.speedup_vs_reference:.2f} {format_interval(r.speedup_ci) or ''} "
        f"| {r.cosine_min:.5f} | {r.held_out_cosine_min:.5f} "
        f"| {r.decision_flips} | {r.accuracy_delta:+.3f} "
        f"| {r.first_run_s:.1f} ({_origin(r.info)}) | {_first_cost(r.info['details'])} "
        f"| {second.get('create_s', 0.0):.1f} ({_origin(second.get('info'))}) |"
    )


def _table(results: list[CandidateResult], gflop: float | None, batch: int) -> list[str]:
    head = (
        f"| engine | status | b{batch} median ms | img/s | GFLOP/s | x torch fp32 (95 % interval) "
        "| cos min "
        "| held-out cos min | flips | acc delta | 1st create s (origin) | 1st-run cost s "
        "| 2nd create s (origin) |"
    )
    return [head, "|" + "---|" * 13, *(_row(r, gflop, batch) for r in results)]


def _notes(results: list[CandidateResult], checks: list[Any]) -> list[str]:
    from arcface_lab.measure.acceptance import format_checks

    lines = format_checks(checks, verdict=False).splitlines()
    for r in results:
        int8 = ((r.info or {}).get("details") or {}).get("int8")
        if not int8:
            continue
        res = int8.get("result") or {}
        lines.append(
            f"- {r.candidate.label}: int8 search {'passed' if int8['passed'] else 'FAILED'} "
            f"(validation cos min {res.get('cosine_min', float('nan')):.5f}, flips "
            f"{res.get('decision_flips')}); {int8['int8_layers']} layers INT8 "
            f"({100 * (int8.get('int8_macs_fraction') or 0):.0f}% of MACs), "
            f"{len(int8['kept_float_layers'])} kept in float, "
            f"{len(int8.get('fp32_layers') or [])} in FP32"
            + (f"; {int8['failure']}" if int8.get("failure") else "")
        )
    return lines


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m arcface_lab.runs.perf", description=__doc__)
    parser.add_argument("--params", default="params/default.yaml")
    parser.add_argument("--model", help="override params model.spec")
    parser.add_argument("--engines", help="backend:precision,... (default: optimize's candidates)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--host-class", help="plan for this hardware class (cpu-avx2, ...)")
    parser.add_argument("--store", help="engine store folder to keep (default: fresh scratch)")
    parser.add_argument("--out", help="output folder (default: reports/bench-<time>)")
    parser.add_argument(
        "--budget-s", type=float, help="seconds for all engines (optimize.budget_s)"
    )
    parser.add_argument("--no-floors", action="store_true", help="skip the convolution peaks")
    return parser


def _at_batch(params: Params, batch: int) -> Params:
    """``params`` timed, compared and judged at one batch size."""
    return dataclasses.replace(
        params,
        bench=dataclasses.replace(params.bench, batch_sizes=(batch,)),
        backends=dataclasses.replace(params.backends, batch_size=batch),
        thresholds=dataclasses.replace(params.thresholds, speedup_batch=batch),
    )


def _run_optimize(
    args: argparse.Namespace, params: Params, host: Host, model: Any, out_dir: Path, plan: Any
) -> OptimizeResult:
    """Optimize with every engine created twice, over a kept or a scratch store."""
    from arcface_lab.measure.optimize import optimize

    scratch = None if args.store else tempfile.mkdtemp(prefix="store-", dir=out_dir)
    store = Path(args.store or str(scratch))
    print(
        f"bench: {model.spec}, batch {args.batch}, {host.cpu.threads} threads, "
        f"on {host.describe()}, store {store}",
        flush=True,
    )
    every = dataclasses.replace(params.optimize, prune=False)  # a comparison of all of them
    try:
        return optimize(
            model,
            dataclasses.replace(params, optimize=every),
            budget_s=args.budget_s,
            host=host,
            recreate=True,
            store={"local": str(store)},
            workdir=out_dir,
            plan=plan,
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)  # engines of several hundred MB each


def _report_text(
    result: OptimizeResult,
    checks: list[Any],
    floors: dict[str, float | str],
    gmacs: float | None,
    export_s: float,
    batch: int,
) -> str:
    """The bench table, the targets and the machine's floors, as ``bench.md`` has them."""
    from arcface_lab.measure.optimize import chosen_line

    gflop = 2 * gmacs if gmacs else None
    header = [
        f"machine: {result.host.describe()}; model {result.model['spec']}, {gflop or 0:.2f} "
        f"GFLOP ({gmacs or 0:.2f} GMAC) per image; batch {batch}; reference "
        f"{result.reference.candidate.label}; ONNX export {export_s:.1f} s",
        chosen_line(result.to_dict()),
    ]
    ref_ms = (result.reference.latency_ms or {}).get("median")
    return "\n".join(
        [
            *header,
            "",
            *_table(result.candidates, gflop, batch),
            "",
            "targets:",
            *_notes(result.candidates, checks),
            "",
            "floors (this machine):",
            *_floor_lines(floors, gflop, batch, ref_ms),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """``make bench``: optimize's candidates at one batch, each created twice; bench.json/md."""
    from arcface_lab.config.params import load_params
    from arcface_lab.core.host import Host, probe
    from arcface_lab.models.source import resolve_model

    args = _parser().parse_args(argv)
    params = _at_batch(load_params(args.params), args.batch)
    host = Host.for_class(args.host_class, probe()) if args.host_class else probe()
    plan = parse_engines(args.engines) if args.engines else None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out or f"reports/bench-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    m = params.model
    model = resolve_model(args.model or m.spec, arch=m.arch, preprocess=m.overrides(), seed=m.seed)
    t0 = time.perf_counter()
    onnx = model.onnx_path()
    export_s = time.perf_counter() - t0
    gmacs = model_gmacs(onnx)
    result = _run_optimize(args, params, host, model, out_dir, plan)
    result.write(out_dir)
    checks = [result.speed_check(params.thresholds)]
    floors: dict[str, float | str] = {}
    if not args.no_floors and importlib.util.find_spec("openvino") is not None:
        floors = conv_floors(("fp32", "bf16", "int8"), host.cpu.threads)
    text = _report_text(result, checks, floors, gmacs, export_s, args.batch)
    print(text)
    payload = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host.to_dict(),
        "model": {"spec": model.spec, "gmacs_per_image": gmacs, "onnx_export_s": export_s},
        "params": args.params,
        "batch": args.batch,
        "optimize": result.to_dict(),
        "checks": [c.to_dict() for c in checks],
        "floors": floors,
        "wall_s": time.perf_counter() - started,
    }
    write_json_atomic(out_dir / "bench.json", payload, default=str)
    write_text_atomic(out_dir / "bench.md", text + "\n")
    print(f"wrote {out_dir / 'bench.json'} ({payload['wall_s']:.0f} s)")
    failed = ("error", "unavailable") if plan else ("error",)
    return 1 if any(r.status in failed for r in result.candidates) else 0


if __name__ == "__main__":
    sys.exit(main())
