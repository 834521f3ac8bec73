"""``arcface-lab``: the command line over the library.

Exit status (a contract scripts rely on): 0 success; 2 bad input or usage
(one line on stderr naming the file or flag, no traceback); 3 a threshold
missed (``run``, and ``verify``/``drift`` with ``--check``); 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab import __version__
from arcface_lab.errors import ArcfaceLabError, InputError, NotebookError

if TYPE_CHECKING:
    from arcface_lab.config.params import Params

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_THRESHOLD = 0, 1, 2, 3
#: Library argument -> the flag that sets it (errors name the argument; the CLI shows the flag).
FLAGS = {"model": "--model", "batch_size": "--batch-size", "out_dir": "--out", "layout": "--nhwc"}
DEFAULT_CHAIN = "auto"  # registry.default_chain: TensorRT first on a GPU, OpenVINO on a CPU
#: ``bench`` times engines; the verification optimize also computes uses this few pairs.
BENCH_PAIRS, BENCH_HELD_OUT = "synthetic:20", "synthetic:8"
#: ``bench`` bounds each batch size (``--budget-s``), not the whole run.
BENCH_BUDGET_S = 24 * 3600.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for every bad input
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _out_file(text: str) -> Path:
    """An output file: not a folder, in a folder this process can write (checked before work)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; expected the path of a file")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {parent} is not a folder")
    try:  # a real write: permission bits say nothing to root, a read-only mount or /proc
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"{path}: cannot write in {parent} ({exc.strerror or type(exc).__name__})"
        ) from None
    return path


def _embed_out(text: str) -> Path:
    """``embed --out``: a ``.npy`` file (see :func:`_out_file`) or a shard folder."""
    path = Path(text)
    if path.suffix.lower() == ".npy":
        return _out_file(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; expected a .npy path or a folder")
    _out_file(str(path / "manifest.json"))
    return path


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _out_dir(text: str) -> Path:
    """A folder a command writes whole: not a file, not one holding anything already."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; expected a folder")
    if path.is_dir() and any(path.iterdir()):
        raise argparse.ArgumentTypeError(f"{path} is not empty; a report is never written over")
    _out_file(str(path / "index.html"))
    return path


def _store_dir(text: str) -> Path:
    """``--local-store``: a folder (made when missing), never a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file; expected a folder for the store")
    return path


def _device(text: str) -> str:
    """``--device``: only what this machine has (``cuda`` without a GPU is an error)."""
    from arcface_lab.core.host import probe

    try:
        return probe().check_device(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("device ")) from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (the input convention defaults to the model's own)")
    g.add_argument(
        "--model",
        required=True,
        help="a .pth checkpoint, an .onnx file, seeded:<arch> or zoo:<name> (arcface-lab zoo)",
    )
    g.add_argument("--arch", help="iresnet architecture (r18..r200); inferred when omitted")
    g.add_argument("--mean", type=float, help="pixel mean (insightface's 127.5, or the zoo's)")
    g.add_argument("--std", type=float, help="pixel std (insightface's 127.5, or the zoo's)")
    g.add_argument("--bgr", action="store_true", help="feed channels as BGR (default RGB)")
    g.add_argument("--nhwc", action="store_true", help="model takes NHWC (default NCHW)")
    g.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (112 112)")
    g.add_argument("--cache-dir", type=Path, help="exported ONNX and engine cache folder")


def _add_engine_args(p: argparse.ArgumentParser, default: str = DEFAULT_CHAIN) -> None:
    g = p.add_argument_group("engine")
    g.add_argument(
        "--backend",
        default=default,
        help=f"backend or chain (default {default}: tensorrt,torch_fast,onnxruntime,torch on a "
        "GPU, openvino,onnxruntime,torch on a CPU)",
    )
    g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"))
    g.add_argument(
        "--device", type=_device, help="cpu, cuda or cuda:N (default: the backend's choice)"
    )
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--strict", action="store_true", help="fail instead of falling back")
    g.add_argument("--batch-min", type=int, help="engine profile: smallest batch")
    g.add_argument("--batch-opt", type=int, help="engine profile: batch to tune for")
    g.add_argument("--batch-max", type=int, help="engine profile: largest batch")
    g.add_argument("--store", help="remote engine store, s3://BUCKET/PREFIX")
    g.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, SeaweedFS, ...)")
    g.add_argument(
        "--local-store",
        type=_store_dir,
        help="local engine store (default $XDG_CACHE_HOME/arcface_lab)",
    )
    g.add_argument(
        "--params",
        type=Path,
        help="params file with the INT8 gates (thresholds.cosine_min.int8, decision_flips_max); "
        "default: the repository's params/default.yaml",
    )


def _model(args: argparse.Namespace) -> Any:
    from arcface_lab.models.source import resolve_model

    given = {
        "mean": args.mean,
        "std": args.std,
        "bgr": args.bgr or None,
        "layout": "NHWC" if args.nhwc else None,
        "size": tuple(args.size) if args.size else None,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    return resolve_model(args.model, arch=args.arch, preprocess=overrides, cache_dir=args.cache_dir)


def _store(args: argparse.Namespace) -> Any:
    from arcface_lab.store import open_store

    s3_input = str(getattr(args, "input", "")).startswith("s3://")
    if args.s3_endpoint and not args.store and not s3_input:
        raise InputError("--s3-endpoint: needs --store s3://BUCKET/PREFIX (or an s3:// --input)")
    endpoint = args.s3_endpoint if args.store else None  # else it is the input's alone
    return open_store(args.local_store, args.store, endpoint, strict=args.strict)


def _params(args: argparse.Namespace) -> Any:
    """``--params``, else the repository's default params; an error saying so when neither."""
    from arcface_lab.config.params import default_params_file, load_params
    from arcface_lab.engines.registry import check_params

    path = getattr(args, "params", None) or default_params_file()
    if path is None:
        raise InputError("--params: no params file given and no params/default.yaml found")
    return check_params(load_params(path))


def _int8_options(
    args: argparse.Namespace, precision: str, params: Any = None
) -> dict[str, dict[str, Any]]:
    """OpenVINO's INT8 options from params (``params``, else ``--params``), for an int8
    engine: the run's own (:func:`~arcface_lab.measure.optimize.engine_options`: the gates,
    the calibration faces and pairs, ``data.flip``), with the gates enforced, since the
    engine built here is handed over as it is."""
    if precision != "int8":
        return {}
    from arcface_lab.measure.optimize import engine_options, int8_gate_options

    params = params or _params(args)
    try:
        gates = int8_gate_options(params)
    except InputError as exc:
        raise InputError(f"--params {exc}") from None
    print(
        f"int8 gates from {params.source}: cosine min >= {gates['int8_cosine_min']}, "
        f"decision flips <= {gates['int8_flips_max']}",
        file=sys.stderr,
    )
    options = engine_options("openvino", "int8", params)
    if "int8_enforce_gates" not in params.backends.options.get("openvino", {}):
        del options["int8_enforce_gates"]  # the engine's default: the gates are enforced
    return {"openvino": options}


def _engine_kwargs(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """What :func:`create_engine` takes from the engine flags, beyond chain and model."""
    profile = {
        k: v
        for k, v in (
            ("batch_min", args.batch_min),
            ("batch_opt", args.batch_opt),
            ("batch_max", args.batch_max),
        )
        if v is not None
    }
    return dict(
        precision=precision,
        strict=args.strict,
        backend_options=_int8_options(args, precision),
        device=args.device,
        batch_size=args.batch_size,
        store=_store(args),
        **profile,
    )


def _engine(args: argparse.Namespace, model: Any, precision: str | None = None) -> Any:
    from arcface_lab.engines.registry import create_engine

    return create_engine(args.backend, model, **_engine_kwargs(args, precision or args.precision))


def _reference(model: Any, args: argparse.Namespace) -> Any:
    """The same model in FP32 on the reference backend (torch; ONNX Runtime for .onnx)."""
    from arcface_lab.engines.registry import create_engine
    from arcface_lab.measure.optimize import reference_backend

    return create_engine(
        reference_backend(model), model, precision="fp32", strict=True, batch_size=args.batch_size
    )


def _used(info: dict[str, Any], reference: str | None, model: Any) -> dict[str, Any]:
    """The fields every result JSON carries about what ran."""
    fields = {
        "backend_used": info["backend"],
        "precision": info["precision"],
        "fallbacks": info["fallbacks"],
        "warnings": info["warnings"],
        "model": model.describe(),
    }
    if reference is not None:
        fields["reference_backend"] = reference
    return fields


def _check(args: argparse.Namespace, precision: str, result: dict[str, Any]) -> int:
    """Exit status for ``--check PARAMS.yaml``: 3 when a threshold is missed."""
    if not args.check:
        return EXIT_OK
    from arcface_lab.config.params import load_params
    from arcface_lab.measure.acceptance import evaluate, format_checks, verdict_passed

    checks = evaluate({precision: result}, load_params(args.check).thresholds)
    print(format_checks(checks))
    return EXIT_OK if verdict_passed(checks) else EXIT_THRESHOLD


def _images(spec: str, size: tuple[int, int]) -> np.ndarray:
    from arcface_lab.data.images import images_from_spec

    return images_from_spec(spec, size)[0]


def _storages(text: str) -> tuple[str, ...]:
    """``--gallery-storage``: comma-separated names of :data:`GALLERY_STORAGES`."""
    from arcface_lab.config.params import GALLERY_STORAGES

    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if n not in GALLERY_STORAGES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma-separated list of {', '.join(GALLERY_STORAGES)}"
        )
    return names


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    from arcface_lab.core.files import write_text_atomic

    text = json.dumps(payload, indent=2, default=str) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    write_text_atomic(path, text)


# -- commands ----------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace) -> int:
    from arcface_lab.core.host import probe
    from arcface_lab.engines.registry import list_backends

    host = probe()
    rows = list_backends(args.pattern, host)
    if args.json:
        _write_json(None, {"host": host.to_dict(), "backends": [r.to_dict() for r in rows]})
        return EXIT_OK
    print(f"host {host.describe()}")
    width = max((len(r.name) for r in rows), default=7)
    for r in rows:
        state = "available" if r.available else f"unavailable: {r.reason}"
        print(f"{r.name:<{width}}  {state}")
        if not r.available:
            continue
        for precision, s in r.support.items():
            note = f": {s.reason}" if s.reason else ""
            print(f"{'':<{width}}    {precision:<5} {s.status}{note}")
    return EXIT_OK


def cmd_zoo(args: argparse.Namespace) -> int:
    from arcface_lab.models.zoo import zoo_entries

    entries = zoo_entries()
    if args.json:
        _write_json(None, {"zoo": [e.to_dict() for e in entries.values()]})
        return EXIT_OK
    for e in entries.values():
        pre = e.preprocess
        what = f"{e.embedding_dim}-d" if e.kind == "embedding" else f"face {e.kind}"
        print(f"zoo:{e.name}  {e.architecture}, {what}  license {e.license}")
        print(f"    source {e.registry} {e.package} ({e.member}), sha256 {e.sha256}")
        print(
            f"    input {pre.size[0]}x{pre.size[1]} {pre.layout} {'BGR' if pre.bgr else 'RGB'}, "
            f"(x - {pre.mean:g}) / {pre.std:g}"
        )
    return EXIT_OK


def cmd_optimize(args: argparse.Namespace) -> int:
    from arcface_lab.core.host import Host, probe
    from arcface_lab.measure.optimize import chosen_line, optimize

    params = _params(args)
    host = Host.for_class(args.host_class, probe()) if args.host_class else probe()
    if args.out.exists() and (args.out / "optimize.json").exists():
        raise InputError(f"--out {args.out}: already holds an optimize.json; pick a new folder")
    print(f"optimize {args.model or params.model.spec} on {host.describe()}", file=sys.stderr)
    result = optimize(args.model, params, budget_s=args.budget_s, out=args.out, host=host)
    print(result.table())
    print(chosen_line(result.to_dict()))
    print(f"wrote {args.out / 'optimize.json'}")
    return EXIT_OK if result.chosen is not None else EXIT_THRESHOLD


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from arcface_lab.core.files import file_sha256
    from arcface_lab.models.checkpoint import load_checkpoint_model
    from arcface_lab.models.onnx_io import export_onnx

    module = load_checkpoint_model(args.weights, args.arch)
    out = export_onnx(module, args.out, (3, 112, 112), opset=args.opset)
    print(f"wrote {out} (sha256 {file_sha256(out)[:16]}..., opset {args.opset}, dynamic batch)")
    return EXIT_OK


def _shard_folder(out: Path) -> bool:
    """``embed --out``: anything but a ``.npy`` path is a folder of shards."""
    return out.suffix.lower() != ".npy"


def cmd_embed(args: argparse.Namespace) -> int:
    from arcface_lab.core.files import atomic_path

    model = _model(args)
    if _shard_folder(args.out):
        return _embed_shards(args, model)
    if args.shard_size is not None:
        raise InputError(f"--shard-size: needs --out FOLDER for the shards, got {args.out}")
    aligned = None
    if args.align:
        emb, aligned, info = _embed_photos(args, model)
        count = len(aligned.faces)
    else:
        images = _images(args.input, model.preprocess.size)
        with _engine(args, model) as engine:
            emb = engine.embed(images, normalize=not args.raw)
            info = engine.info.to_dict()
        count = len(images)
    with atomic_path(args.out, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, emb.astype(np.float32))
    info.update(images=count, embedding_dim=int(emb.shape[1]), normalized=not args.raw)
    info["model"] = model.describe()
    if aligned is not None:
        info["faces"] = aligned.to_dict()
        _write_json(args.out.with_suffix(".faces.json"), info["faces"])
    if args.info_json:
        _write_json(args.info_json, info)
    used = f"{info['backend']} {info['precision']} on {info['device']}"
    skipped = "".join(f"; skipped {f['backend']}: {f['reason']}" for f in info["fallbacks"])
    found = ""
    if aligned is not None:
        counts = ", ".join(f"{n} {s}" for s, n in aligned.counts().items() if n)
        found = f" of faces aligned from {len(aligned.photos)} photo(s) ({counts})"
    print(f"wrote {args.out}: {emb.shape[0]}x{emb.shape[1]} float32{found} via {used}{skipped}")
    if aligned is not None:
        for record in aligned.photos:
            if record.status != "ok":
                print(f"  {record.photo}: {record.status}: {record.message}", file=sys.stderr)
    return EXIT_OK


def _embed_shards(args: argparse.Namespace, model: Any) -> int:
    """``embed --out FOLDER``: streamed through the engine into resumable shards."""
    from arcface_lab.engines.registry import parse_chain
    from arcface_lab.runs.stream import DEFAULT_SHARD_SIZE, embed_to_shards, open_input

    if args.align:
        raise InputError("--align: writes one .npy with its faces index; give --out FILE.npy")
    if args.ray is not None:
        return _embed_ray(args)
    source = open_input(args.input, model.preprocess.size, args.s3_endpoint)
    with _engine(args, model) as engine:
        result = embed_to_shards(
            engine,
            source,
            args.out,
            model,
            shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
            normalize=not args.raw,
            progress=not args.quiet,
            chain=parse_chain(args.backend, args.device),
        )
    info = result.engine
    skipped = "".join(f"; skipped {f['backend']}: {f['reason']}" for f in info["fallbacks"])
    return _wrote_shards(
        args,
        result,
        f", peak RSS {result.peak_rss_mb:.0f} MB via {info['backend']} {info['precision']} "
        f"on {info['device']}{skipped}",
    )


def _wrote_shards(args: argparse.Namespace, result: Any, via: str) -> int:
    """``embed --out FOLDER``'s info JSON and its one line: what was written, how fast."""
    if args.info_json:
        _write_json(args.info_json, result.to_dict())
    resumed = f", {result.resumed_shards} resumed" if result.resumed_shards else ""
    print(
        f"wrote {args.out}: {result.faces}x{result.dim} float32 in {result.shards} shard(s)"
        f"{resumed}, {result.images_per_s:.1f} images/s{via}"
    )
    return EXIT_OK


def _embed_ray(args: argparse.Namespace) -> int:
    """``embed --out FOLDER --ray [ADDRESS]``: the same shards, made by a pool of Ray actors."""
    from arcface_lab.runs.ray_embed import embed_ray
    from arcface_lab.runs.stream import DEFAULT_SHARD_SIZE

    given = [
        f
        for f, v in (
            ("--arch", args.arch),
            ("--mean", args.mean),
            ("--std", args.std),
            ("--bgr", args.bgr),
            ("--nhwc", args.nhwc),
            ("--size", args.size),
        )
        if v
    ]
    if given:
        raise InputError(
            f"{given[0]}: not taken with --ray (each actor resolves --model on its own); "
            "export an .onnx with the convention built in, or run without --ray"
        )
    store = None
    if args.store or args.local_store or args.s3_endpoint:
        local = str(args.local_store) if args.local_store else None
        store = {"local": local, "s3": args.store, "endpoint": args.s3_endpoint}
    kwargs = {"strict": args.strict, "batch_size": args.batch_size, "device": args.device}
    result = embed_ray(
        args.model,
        args.input,
        args.out,
        chain=args.backend,
        precision=args.precision,
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        normalize=not args.raw,
        workers=args.workers,
        address=args.ray or None,
        store=store,
        engine_kwargs={k: v for k, v in kwargs.items() if v is not None},
        progress=not args.quiet,
    )
    info = result.engine
    via = f" via {info['backend']} {info['precision']} on {info['workers']} Ray worker(s)"
    return _wrote_shards(args, result, via)


def _embed_photos(args: argparse.Namespace, model: Any) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """``embed --align``: photos through the face pipeline, on the engine the flags name."""
    from arcface_lab.config.params import FacesParams, load_params
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.runs.faces import FacePipeline

    faces = load_params(args.params).faces if args.params else FacesParams()
    cache = Path(args.cache_dir or default_cache_root())
    kwargs = _engine_kwargs(args, args.precision)
    with FacePipeline(model, args.backend, faces=faces, cache_dir=cache, **kwargs) as pipe:
        result = pipe.embed_photos(args.input, normalize=not args.raw)
    return result.embeddings, result.aligned, result.engine


def _align(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any] | None]:
    """Detect and align the faces of ``args.photos`` (an AlignResult), the faces params,
    and with ``--check`` the re-alignment check through ``--model`` on ``--backend``."""
    from arcface_lab.config.params import FacesParams, load_params
    from arcface_lab.core.files import default_cache_root
    from arcface_lab.data.align import list_photos
    from arcface_lab.models.faces import FaceSpecs

    faces = load_params(args.params).faces if args.params else FacesParams()
    cache = Path(args.cache_dir or default_cache_root())
    photos = list_photos(args.photos, cache)
    if not args.check:
        return FaceSpecs(faces, cache).photos(photos), faces, None
    from arcface_lab.runs.faces import FacePipeline, alignment_check

    with FacePipeline(args.model, args.backend, faces=faces, cache_dir=cache, strict=True) as pipe:
        result = pipe.align(photos)
        check = alignment_check(
            result.faces, pipe.detector, pipe.engine, faces.realign, result.landmarks()
        )
        check["model"] = args.model
    return result, faces, check


def _print_realign(check: dict[str, Any]) -> None:
    """The re-alignment check in a few lines (``align --check``)."""

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    t = check["targets"]
    print(
        f"re-alignment ({check['detector']}, {check['faces']} crops aligned again): "
        f"{check['lost']} lost (target 0); landmarks against {check['against']}: median "
        f"{fmt(check['px_median'], '.2f')} px (<= {t['px_median']:g}), max "
        f"{fmt(check['px_max'], '.2f')} px (<= {t['px_max']:g}); embedding cosine through "
        f"{check['model']} ({check['engine'].get('backend', '?')}): median "
        f"{fmt(check['cosine_median'], '.4f')}, min {fmt(check['cosine_min'], '.4f')} "
        f"(>= {t['cosine_min']:g}): {'PASS' if check['passed'] else 'FAIL'}"
        + (f" ({'; '.join(check['misses'])})" if check["misses"] else "")
    )


def cmd_align(args: argparse.Namespace) -> int:
    from arcface_lab.core.files import atomic_path

    if args.out is None and not args.check:
        raise InputError("--out FILE.npy is required (or --check alone)", argument="out")
    if args.out is not None and args.out.suffix.lower() != ".npy":
        raise InputError(f"--out {args.out}: expected a .npy path (the index goes beside it)")
    result, _, check = _align(args)
    payload = result.to_dict()
    if check is not None:
        payload["realign"] = check
    if args.out is not None:
        index = args.out.with_suffix(".json")
        with atomic_path(args.out, suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, result.faces)
        _write_json(index, payload)
    if args.report:
        from arcface_lab.report.faces import write_align_report

        write_align_report(result, args.report)
    counts = ", ".join(f"{n} {s}" for s, n in payload["photos"].items() if n)
    where = f"wrote {args.out}: " if args.out is not None else ""
    print(
        f"{where}{result.faces.shape[0]} aligned faces (uint8 112x112 RGB) from "
        f"{len(result.photos)} photo(s) ({counts})"
        + (f"; index {args.out.with_suffix('.json')}" if args.out is not None else "")
        + (f"; report {args.report / 'index.html'}" if args.report else "")
    )
    for record in result.photos:
        if record.status != "ok":
            print(f"  {record.photo}: {record.status}: {record.message}", file=sys.stderr)
    if check is not None:
        _print_realign(check)
        return EXIT_OK if check["passed"] else EXIT_THRESHOLD
    return EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    from arcface_lab.core.metrics import cosine_drift

    model = _model(args)
    images = _images(args.input, model.preprocess.size)
    with _reference(model, args) as ref:
        ref_emb = ref.embed(images)
    with _engine(args, model) as engine:
        drift = cosine_drift(ref_emb, engine.embed(images))
        info = engine.info.to_dict()
    payload = {
        "images": len(images),
        **_used(info, ref.info.backend, model),
        "cosine": drift.to_dict(),
        "engine": info,
    }
    _write_json(args.out, payload)
    print(
        f"{info['backend']} {info['precision']} vs {ref.info.backend} fp32 on {len(images)} faces: "
        f"cosine min {drift.min:.6f}, p0.1% {drift.p001:.6f}, mean {drift.mean:.6f}"
    )
    return _check(args, info["precision"], {"drift": drift.to_dict()})


def _rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated rates, got {text!r}") from None
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected rates in (0, 1), got {text!r}")
    return values


def cmd_lowfar(args: argparse.Namespace) -> int:
    """All-pairs TAR@FAR and 1:N on labelled embeddings; reference vs candidate, and the
    mixed case (the reference's gallery, the candidate's probes) with its re-enrolment
    verdict."""
    from arcface_lab.core import lowfar
    from arcface_lab.data.labels import load_labels
    from arcface_lab.data.shards import open_embeddings

    ref = open_embeddings(args.reference)
    labels = load_labels(args.labels, int(ref.shape[0]))
    payload: dict[str, Any] = {
        "reference": str(args.reference),
        "candidate": str(args.candidate) if args.candidate else None,
        "labels": str(args.labels),
        "faces": int(ref.shape[0]),
        "identities": int(np.unique(labels).size),
    }
    if args.candidate:
        cand = open_embeddings(args.candidate)
        pairs = lowfar.compare_all_pairs(ref, cand, labels, args.fars, block=args.block)
        ident = lowfar.compare_identification(ref, cand, labels, args.fpirs, block=args.block)
    else:
        pairs = lowfar.all_pairs_verification(ref, labels, args.fars, block=args.block).to_dict()
        ident = lowfar.identification(ref, labels, args.fpirs, block=args.block).to_dict()
    payload["all_pairs"], payload["identification"] = pairs, ident
    if args.candidate:
        from arcface_lab.config.params import Params, load_params
        from arcface_lab.measure.acceptance import reenrolment

        limits = (load_params(args.params) if args.params else Params()).reenrolment
        payload["mixed"] = {**pairs.pop("mixed"), "identification": ident.pop("mixed")}
        payload["reenrolment"] = reenrolment(
            payload["mixed"], payload["mixed"]["identification"], limits
        )
    if args.gallery_storage:
        from arcface_lab.config.params import Params, load_params
        from arcface_lab.measure.storage import Ivf, storage_table

        chosen = load_params(args.params) if args.params else Params()
        limits, scale = chosen.reenrolment, chosen.scale
        stored = cand if args.candidate else ref
        payload["gallery_storage"] = storage_table(
            np.asarray(stored), labels, args.gallery_storage, limits.fars, limits.fpirs,
            ivf=Ivf(scale.ivf_lists, scale.ivf_probes),
        )  # fmt: skip
    _write_json(args.out, payload)
    rows = pairs.get("points", [])
    print(f"{payload['faces']} faces, {payload['identities']} identities")
    for p in rows:
        if not p["supported"]:
            print(f"  FAR {p['far']:g}: n/a ({p['reason']})")
        elif args.candidate:
            print(
                f"  FAR {p['far']:g}: TAR {p['reference_tar']:.5f} -> {p['candidate_tar']:.5f} "
                f"({p['impostors_at_threshold']} impostor pairs at the threshold), "
                f"{p['decision_flips']} decision flip(s)"
            )
        else:
            print(f"  FAR {p['far']:g}: TAR {p['tar']:.5f} ({p['impostors_at_threshold']} "
                  "impostor pairs at the threshold)")  # fmt: skip
    for t in (payload.get("mixed") or {}).get("threshold_transfer", []):
        if t["supported"]:
            print(
                f"  mixed at the reference's FAR {t['far_target']:g} threshold: FAR "
                f"{t['far_measured']:.2g}, TAR {t['tar_measured']:.5f} (reference "
                f"{t['tar_reference']:.5f}), {t['decision_flips']} decision flip(s)"
            )
    if "reenrolment" in payload:
        print(f"  {payload['reenrolment']['reason']}")
    for r in (payload.get("gallery_storage") or {}).get("storages", []):
        if not r["supported"]:
            print(f"  gallery as {r['storage']}: n/a ({r['reason']})")
            continue
        flips = sum(v.get("decision_flips", 0) for v in r["verification"])
        print(
            f"  gallery as {r['storage']}: {r['bytes_per_face']} bytes a face, "
            f"{flips} 1:1 decision flip(s), rank-1 {r['rank1_float32']} -> {r['rank1']}"
        )
    print(f"wrote {args.out}")
    return EXIT_OK


def cmd_golden_record(args: argparse.Namespace) -> int:
    """Embed faces once and keep them, with what made them, as a golden folder."""
    from arcface_lab.measure.golden import record_golden

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise InputError(
            f"--out {args.out}: exists and is not empty; a golden is never written over",
            argument="out",
        )
    model = _model(args)
    faces = _images(args.input, model.preprocess.size)
    labels = None
    if args.labels:
        from arcface_lab.data.labels import load_labels

        labels = load_labels(args.labels, len(faces))
    with _engine(args, model) as engine:
        out = record_golden(args.out, engine, model, faces, labels)
        info = engine.info
    print(
        f"recorded {len(faces)} faces ({'labelled' if labels is not None else 'no labels'}) "
        f"embedded by {info.backend}/{info.precision} on {info.device} in {out}"
    )
    return EXIT_OK


def cmd_golden_check(args: argparse.Namespace) -> int:
    """Embed a golden folder's faces now and judge them with the face gates (exit 3: off)."""
    from arcface_lab.config.params import Params, default_params_file, load_params
    from arcface_lab.measure.golden import check_golden

    source = args.params or default_params_file()
    params = load_params(source) if source else Params()
    model = _model(args)
    with _engine(args, model) as engine:
        result = check_golden(args.golden, engine, model, params.thresholds, params.reenrolment)
    if args.out:
        _write_json(args.out, result)
    for gate in result["gates"]:
        print(f"  {'holds' if gate['holds'] else 'FAIL '}  {gate['gate']}: {gate['measured']}")
    print(result["reason"])
    return EXIT_OK if result["passed"] else EXIT_THRESHOLD


def cmd_verify(args: argparse.Namespace) -> int:
    from arcface_lab.core.metrics import compare_verification, cosine_drift, flip_sum, mirror
    from arcface_lab.data.pairs import load_pairs

    model = _model(args)
    pairs = load_pairs(args.pairs, model.preprocess.size)
    faces = np.concatenate([pairs.images_a, pairs.images_b])
    n = pairs.n_pairs

    def embed_pairs(engine: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plain = engine.embed(faces)
        emb = flip_sum(plain, engine.embed(mirror(faces))) if args.flip else plain
        return plain, emb[:n], emb[n:]

    with _reference(model, args) as ref:
        ref_plain, ref_a, ref_b = embed_pairs(ref)
    with _engine(args, model) as engine:
        eng_plain, eng_a, eng_b = embed_pairs(engine)
        info = engine.info.to_dict()
    cmp = compare_verification(ref_a, ref_b, eng_a, eng_b, pairs.same)
    drift = cosine_drift(ref_plain, eng_plain)
    payload = {
        "pairs": n,
        "data_kind": pairs.kind,
        "source": pairs.source,
        "flip": args.flip,
        **_used(info, ref.info.backend, model),
        "reference": cmp["reference"],
        "engine": cmp["engine"],
        "accuracy_delta": cmp["accuracy_delta"],
        "decision_flips": cmp["decision_flips"],
        "flipped_pairs": cmp["flipped_pairs"],
        "cosine": drift.to_dict(),
        "tar_at_far": {
            "far": cmp["engine"]["tar_at_far"]["far"],
            "reference": cmp["reference"]["tar_at_far"]["tar"],
            "engine": cmp["engine"]["tar_at_far"]["tar"],
        },
    }
    _write_json(args.out, payload)
    label = " (synthetic pairs: accuracy identifies nothing)" if pairs.kind == "synthetic" else ""
    print(
        f"{n} pairs{label}: reference {cmp['reference']['accuracy']:.4f}, "
        f"{info['backend']} {info['precision']} {cmp['engine']['accuracy']:.4f}, "
        f"delta {cmp['accuracy_delta']:+.4f}, decision flips {cmp['decision_flips']}, "
        f"cosine min {drift.min:.6f}"
    )
    return _check(args, info["precision"], {"drift": drift.to_dict(), "verification": cmp})


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(f"--batch-sizes {text!r}: expected positive integers, e.g. 1,8,32")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    """Each backend of ``--backends`` against the reference, through optimize's one loop."""
    from arcface_lab.config.params import (
        BackendParams,
        BenchParams,
        DataParams,
        ModelParams,
        OptimizeParams,
        Params,
        StoreParams,
    )
    from arcface_lab.core.host import probe
    from arcface_lab.engines.registry import get_backend, parse_chain
    from arcface_lab.errors import BackendUnavailable
    from arcface_lab.measure.optimize import Candidate, optimize, reference_backend

    sizes = _int_list(args.batch_sizes)
    names = parse_chain(args.backends, args.device)
    model = _model(args)
    reference = reference_backend(model, "torch")
    host = probe()
    pre = model.preprocess
    gate_params = _params(args) if args.precision == "int8" else None  # read once
    options = _int8_options(args, args.precision, gate_params)
    params = Params(
        name="bench",
        model=ModelParams(
            spec=args.model,
            arch=args.arch,
            mean=pre.mean,
            std=pre.std,
            bgr=pre.bgr,
            layout=pre.layout,
            size=pre.size,
        ),
        backends=BackendParams(
            chain=tuple(names), reference=reference, batch_size=args.batch_size, options=options
        ),
        data=DataParams(images=args.input, pairs=BENCH_PAIRS, held_out=BENCH_HELD_OUT),
        bench=BenchParams(batch_sizes=tuple(sizes), warmup_s=args.warmup_s, budget_s=args.budget_s),
        store=StoreParams(args.local_store, args.store, args.s3_endpoint),
        thresholds=gate_params.thresholds if gate_params else Params().thresholds,
        optimize=OptimizeParams(emulated=True, prune=False),  # named: measured in full
    )
    plan = []
    for name in names:
        precision = "fp32" if name == reference else args.precision
        support = get_backend(name).support(precision, host, args.device)
        plan.append(Candidate(name, precision, support=support))
    result = optimize(
        model,
        params,
        budget_s=BENCH_BUDGET_S,
        host=host,
        progress=False,
        plan=plan,
        device=args.device,
        threads=args.threads,
    )
    records = [r for c in result.candidates for r in c.records]
    unavailable = [
        {"backend": c.candidate.backend, "precision": c.candidate.precision, "reason": c.reason}
        for c in result.candidates
        if c.status in ("unavailable", "error")
    ]
    if args.strict and unavailable:
        first = unavailable[0]
        raise BackendUnavailable(f"{first['backend']} {first['precision']}: {first['reason']}")
    images = result.data["images"]
    payload = {
        "model": model.describe(),
        "reference": {"backend": reference, "precision": "fp32"},
        "images": images,
        "records": records,
        "unavailable": unavailable,
    }
    _write_json(args.out, payload)
    print(
        f"{'backend':<12} {'prec':<5} {'batch':>5} {'median ms':>10} {'img/s':>8} "
        f"{'speedup':>8} {'cos min':>9} {'mem MB':>8}"
    )
    for r in records:
        print(
            f"{r['backend']:<12} {r['precision']:<5} {r['batch_size']:>5} "
            f"{r['latency_ms']['median']:>10.2f} {r['throughput_ips']:>8.1f} "
            f"{r['speedup_vs_reference']:>8.2f} {r['cosine_min']:>9.6f} "
            f"{r['peak_memory_mb']:>8.0f} {r['memory_kind']}"
        )
    for u in unavailable:
        print(f"{u['backend']:<12} {u['precision']:<5} unavailable: {u['reason']}")
    return EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    model = _model(args)
    with _engine(args, model) as engine:
        info = engine.info.to_dict()
    payload = {
        "backend": info["backend"],
        **_used(info, None, model),
        "artifact": info["artifact"],
        "artifacts": info["details"].get("artifacts", []),
        "engine": info,
    }
    _write_json(args.out, payload)
    art = info["artifact"]
    what = f"{art['kind']} {art['key'][:16]}... origin {art['origin']}" if art else "no artifact"
    print(f"{info['backend']} {info['precision']}: {what}")
    return EXIT_OK


def run_params(args: argparse.Namespace) -> Params:
    """``run``'s params file, with ``optimize.prune`` off under ``--time-all``."""
    from arcface_lab.config.params import load_params

    return load_params(args.params, {"optimize.prune": False} if args.time_all else None)


def cmd_run(args: argparse.Namespace) -> int:
    from arcface_lab.runs.pipeline import run

    params = run_params(args)
    result = run(
        params,
        out_dir=args.out,
        reports_root=args.reports_root,
        render=args.render,
        notebooks_dir=args.notebooks_dir,
    )
    print(result.summary_text())
    print(f"run folder: {result.run_dir}")
    print(f"report: {result.run_dir / 'index.html'}")
    return EXIT_OK if result.passed else EXIT_THRESHOLD


def cmd_render(args: argparse.Namespace) -> int:
    from arcface_lab.report import notebooks
    from arcface_lab.report.html import render
    from arcface_lab.report.run_folder import RunFolder

    source = RunFolder(args.run_dir)
    if args.out is not None:
        run_dir = source.copy_to(args.out).path
        print(f"rendering a copy of {source.path} in {run_dir}")
    elif source.rendered and args.notebooks:
        raise InputError(
            f"{source.path}: already rendered (notebooks.json); render never rewrites a "
            "rendered run in place: give --out NEW_DIR to render a copy beside it"
        )
    else:
        run_dir = source.path
    measured = (run_dir / "verdict.json").is_file() and not (run_dir / "error.json").is_file()
    failure: NotebookError | None = None
    if args.notebooks and measured:
        if notebooks.available():
            try:
                for nb in notebooks.execute(run_dir, notebooks_dir=args.notebooks_dir):
                    print(f"wrote {run_dir / str(nb.html)}")
            except NotebookError as exc:
                failure = exc  # index.html still written, and says which notebook failed
        else:
            print("papermill/nbconvert not installed: index.html only", file=sys.stderr)
    print(f"wrote {render(run_dir)}")
    if failure:
        raise failure
    return EXIT_OK


def cmd_matrix(args: argparse.Namespace) -> int:
    from arcface_lab.report.matrix import write_matrix

    out = write_matrix(args.run_dirs, args.out)
    print(f"wrote {out} ({len(set(p.resolve() for p in args.run_dirs))} runs)")
    return EXIT_OK


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arcface-lab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"arcface-lab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress; tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("backends", help="list backends and whether they can run here")
    p.add_argument("pattern", nargs="?", default="*", help="glob over backend names")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_backends)

    p = sub.add_parser("zoo", help="list the trained models known by name (--model zoo:NAME)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("export-onnx", help="export a .pth checkpoint to ONNX (dynamic batch)")
    p.add_argument("--weights", required=True, type=Path)
    p.add_argument("--arch", help="iresnet architecture; inferred when omitted")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--out", required=True, type=_out_file)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("embed", help="embed face crops")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument(
        "--input",
        required=True,
        help=".npy, image folder, list file (.txt: one path per line), image, synthetic:N; "
        "with --out FOLDER also s3://BUCKET/PREFIX (image objects; --s3-endpoint)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=_embed_out,
        help="float32 (N, D) .npy; or a FOLDER: streamed in bounded memory into "
        "shard-*.npy + manifest.json, resumed where a stopped run left off",
    )
    p.add_argument(
        "--shard-size", type=_positive_int, help="faces per shard with --out FOLDER (4096)"
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="with --out FOLDER: a Ray Data job, one engine per actor; ADDRESS of a running "
        "cluster (auto, ray://HOST:10001), or none for a local instance on 127.0.0.1",
    )
    p.add_argument("--workers", type=_positive_int, help="Ray actors (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--raw", action="store_true", help="do not L2-normalize")
    p.add_argument(
        "--align",
        action="store_true",
        help="--input is photos (a photo, a folder, samples:NAME): detect and align every "
        "face first; OUT.faces.json says which photo and box each row is",
    )
    p.add_argument("--info-json", type=Path, help="write what ran (backend, fallbacks) here")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("align", help="detect, landmark and align every face of photos (112x112)")
    p.add_argument("photos", help="a photo, a folder of photos, or samples:face-api")
    p.add_argument("--out", type=_out_file, help="uint8 (N, 112, 112, 3) .npy")
    p.add_argument(
        "--check",
        action="store_true",
        help="align every crop again and measure the drift (landmarks to the template in px, "
        "crops lost, embedding cosine through --model); exit 3 when faces.realign's targets "
        "are missed",
    )
    p.add_argument(
        "--model",
        default="zoo:faceplugin-mbf",
        help="--check: the embedder (default zoo:faceplugin-mbf)",
    )
    p.add_argument(
        "--backend", default="onnxruntime", help="--check: its backend (default onnxruntime)"
    )
    p.add_argument("--report", type=_out_dir, help="folder for an HTML contact sheet")
    p.add_argument("--params", type=Path, help="params file whose faces: block is used")
    p.add_argument("--cache-dir", type=Path, help="where the face models are cached")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("drift", help="per-face cosine of an engine against the reference")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument("--input", required=True, help=".npy, image folder, image, or synthetic:N")
    p.add_argument("--out", required=True, type=_out_file, help="drift JSON")
    p.add_argument("--check", type=Path, help="params file whose thresholds must hold (exit 3)")
    p.set_defaults(func=cmd_drift)

    p = sub.add_parser("verify", help="10-fold verification: engine vs reference on pairs")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument("--pairs", required=True, help="insightface .bin, pairs .csv or synthetic:N")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no flip TTA")
    p.add_argument("--out", required=True, type=_out_file, help="verification JSON")
    p.add_argument("--check", type=Path, help="params file whose thresholds must hold (exit 3)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("lowfar", help="all-pairs TAR@FAR and 1:N on labelled embeddings")
    p.add_argument("--reference", required=True, type=Path, help=".npy or shard folder")
    p.add_argument("--candidate", type=Path, help="the engine's .npy or shard folder, same faces")
    p.add_argument("--labels", required=True, type=Path, help=".csv (identity column), .txt, .npy")
    p.add_argument("--fars", type=_rates, default="1e-1,1e-2,1e-3,1e-4,1e-5,1e-6")
    p.add_argument("--fpirs", type=_rates, default="1e-1,1e-2,1e-3")
    p.add_argument("--block", type=_positive_int, default=2048, help="rows per block (memory)")
    p.add_argument(
        "--params",
        type=Path,
        help="params file whose reenrolment: block judges the mixed case (default: defaults)",
    )
    p.add_argument(
        "--gallery-storage",
        type=_storages,
        help="float16,int8,pq64,ivfpq64: the figures with the gallery stored so (the "
        "candidate's embeddings, else the reference's), against float32; ivfpq64's lists "
        "from --params (scale.ivf_lists, scale.ivf_probes)",
    )
    p.add_argument("--out", required=True, type=_out_file, help="low-FAR JSON")
    p.set_defaults(func=cmd_lowfar)

    p = sub.add_parser(
        "golden", help="record a model's embeddings of your faces; check them after an upgrade"
    )
    golden = p.add_subparsers(dest="golden_command", required=True, parser_class=_Parser)
    g = golden.add_parser("record", help="embed faces and keep them as a golden folder")
    _add_model_args(g)
    _add_engine_args(g)
    g.add_argument("--input", required=True, help=".npy of aligned crops, images, synthetic:N")
    g.add_argument("--labels", type=Path, help="one identity per face (.csv, .txt, .npy)")
    g.add_argument("--out", required=True, type=Path, help="the golden folder (new or empty)")
    g.set_defaults(func=cmd_golden_record)
    g = golden.add_parser(
        "check",
        help="embed a golden folder's faces now and judge them (--params: the thresholds and "
        "reenrolment limits; default params/default.yaml)",
    )
    g.add_argument("golden", type=Path, help="a folder golden record wrote")
    _add_model_args(g)
    _add_engine_args(g)
    g.add_argument("--out", type=_out_file, help="the check as JSON")
    g.set_defaults(func=cmd_golden_check)

    p = sub.add_parser("bench", help="latency, throughput, memory and speedup vs the reference")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument("--backends", required=True, help="backends to measure, e.g. torch,onnxruntime")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--input", default="synthetic:64", help="images (default synthetic:64)")
    p.add_argument("--warmup-s", type=float, default=1.0)
    p.add_argument("--budget-s", type=float, default=10.0, help="time budget per batch size")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per engine (0: default)")
    p.add_argument("--out", required=True, type=_out_file, help="bench JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "optimize",
        help="try every backend x precision native here; choose the fastest that passes the gates",
    )
    p.add_argument("--model", help="a .pth, an .onnx or seeded:<arch> (default: params model.spec)")
    p.add_argument(
        "--params",
        type=Path,
        help="gates, data, candidates and budget (default: the repository's params/default.yaml)",
    )
    p.add_argument("--budget-s", type=float, help="seconds for all candidates (optimize.budget_s)")
    p.add_argument(
        "--host-class",
        help="plan for this hardware class instead of the probed one (cpu-avx2, gpu-sm90, ...)",
    )
    p.add_argument("--out", required=True, type=Path, help="folder for optimize.json")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("build", help="build (or fetch) an engine artifact through the store")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument("--out", required=True, type=_out_file, help="build info JSON")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("render", help="write a run folder's HTML from its JSON alone")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--no-notebooks",
        dest="notebooks",
        action="store_false",
        help="index.html only (default: also execute the notebooks when papermill is installed)",
    )
    p.add_argument("--notebooks-dir", type=Path, help="notebooks to execute (default notebooks/)")
    p.add_argument(
        "--out", type=Path, help="render a copy here (a rendered run is never rewritten in place)"
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("matrix", help="merge run folders into one ACCEPTANCE_MATRIX.md table")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument(
        "--out", type=_out_file, default=Path("ACCEPTANCE_MATRIX.md"), help="Markdown file"
    )
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("run", help="a whole run from a params file: measure, then report")
    p.add_argument("params", type=Path)
    p.add_argument("--out", type=Path, help="run folder (default reports/<run-id>)")
    p.add_argument("--reports-root", type=Path, default=Path("reports"))
    p.add_argument(
        "--no-render",
        dest="render",
        action="store_false",
        help="measure and write JSON (and index.html) only: no papermill/nbconvert needed",
    )
    p.add_argument("--notebooks-dir", type=Path, help="notebooks to execute (default notebooks/)")
    p.add_argument(
        "--time-all",
        action="store_true",
        help="time every candidate in full (optimize.prune: false), none cannot_win: the "
        "whole frontier, as make reference publishes it",
    )
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return func(args)
    except ArcfaceLabError as exc:
        if args.verbose:
            traceback.print_exc()
        text = exc.for_flags(FLAGS) if isinstance(exc, InputError) else str(exc)
        print(f"arcface-lab {args.command}: error: {text}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if exc.args == (_SIGTERM,):
            print(f"arcface-lab {args.command}: terminated (SIGTERM)", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"arcface-lab {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # anything unexpected: exit 1, traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(f"arcface-lab {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


_SIGTERM = "SIGTERM"


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C: every partial file and run folder is cleaned up on the way."""
    raise KeyboardInterrupt(_SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
