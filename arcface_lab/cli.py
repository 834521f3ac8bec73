"""``arcface-lab``: the command line over the library.

Exit status (a contract scripts rely on): 0 success; 2 bad input or usage
(one line on stderr naming the file or flag, no traceback); 3 a threshold
missed (``run``, and ``verify``/``drift`` with ``--check``); 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab import __version__
from arcface_lab.errors import ArcfaceLabError, InputError

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_THRESHOLD = 0, 1, 2, 3
DEFAULT_CHAIN = "onnxruntime,torch"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, as for every bad input
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", required=True, help="a .pth checkpoint, an .onnx file or seeded:<arch>"
    )
    g.add_argument("--arch", help="iresnet architecture (r18..r200); inferred when omitted")
    g.add_argument("--mean", type=float, default=127.5, help="pixel mean (default 127.5)")
    g.add_argument("--std", type=float, default=127.5, help="pixel std (default 127.5)")
    g.add_argument("--bgr", action="store_true", help="feed channels as BGR (default RGB)")
    g.add_argument("--nhwc", action="store_true", help="model takes NHWC (default NCHW)")
    g.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(112, 112))
    g.add_argument("--cache-dir", type=Path, help="exported ONNX and engine cache folder")


def _add_engine_args(p: argparse.ArgumentParser, default: str = DEFAULT_CHAIN) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--backend", default=default, help=f"backend or chain (default {default})")
    g.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"))
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: the backend's choice)")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--strict", action="store_true", help="fail instead of falling back")


def _model(args: argparse.Namespace) -> Any:
    from arcface_lab.data import Preprocess
    from arcface_lab.models.source import resolve_model

    pre = Preprocess(
        mean=args.mean,
        std=args.std,
        bgr=args.bgr,
        layout="NHWC" if args.nhwc else "NCHW",
        size=tuple(args.size),
    )
    return resolve_model(args.model, arch=args.arch, preprocess=pre, cache_dir=args.cache_dir)


def _engine(args: argparse.Namespace, model: Any) -> Any:
    from arcface_lab.registry import create_engine

    return create_engine(
        args.backend,
        model,
        precision=args.precision,
        strict=args.strict,
        device=args.device,
        batch_size=args.batch_size,
    )


def _images(spec: str, size: tuple[int, int]) -> np.ndarray:
    from arcface_lab.data import load_images, synthetic_faces

    if spec.startswith("synthetic"):
        _, _, n = spec.partition(":")
        if n and not n.isdigit():
            raise InputError(f"--input {spec}: expected synthetic or synthetic:N")
        return synthetic_faces(int(n or 64), size=size)
    return load_images(spec, size)


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    from arcface_lab.models.onnx_io import atomic_path

    text = json.dumps(payload, indent=2, default=str) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# -- commands ----------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace) -> int:
    from arcface_lab.registry import list_backends

    rows = list_backends(args.pattern)
    if args.json:
        _write_json(None, {"backends": [r.to_dict() for r in rows]})
        return EXIT_OK
    width = max((len(r.name) for r in rows), default=7)
    for r in rows:
        state = "available" if r.available else f"unavailable: {r.reason}"
        print(f"{r.name:<{width}}  {','.join(r.precisions):<15}  {state}")
    return EXIT_OK


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from arcface_lab.models.checkpoint import load_checkpoint_model
    from arcface_lab.models.onnx_io import export_onnx, file_sha256

    module = load_checkpoint_model(args.weights, args.arch)
    out = export_onnx(module, args.out, (3, 112, 112), opset=args.opset)
    print(f"wrote {out} (sha256 {file_sha256(out)[:16]}..., opset {args.opset}, dynamic batch)")
    return EXIT_OK


def cmd_embed(args: argparse.Namespace) -> int:
    from arcface_lab.models.onnx_io import atomic_path

    model = _model(args)
    images = _images(args.input, model.preprocess.size)
    with _engine(args, model) as engine:
        emb = engine.embed(images, normalize=not args.raw)
        info = engine.info.to_dict()
    with atomic_path(args.out, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, emb.astype(np.float32))
    info.update(images=len(images), embedding_dim=int(emb.shape[1]), normalized=not args.raw)
    info["model"] = model.describe()
    if args.info_json:
        _write_json(args.info_json, info)
    used = f"{info['backend']} {info['precision']} on {info['device']}"
    skipped = "".join(f"; skipped {f['backend']}: {f['reason']}" for f in info["fallbacks"])
    print(f"wrote {args.out}: {emb.shape[0]}x{emb.shape[1]} float32 via {used}{skipped}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from arcface_lab.params import load_params
    from arcface_lab.pipeline import run

    params = load_params(args.params)
    result = run(params, out_dir=args.out, reports_root=args.reports_root)
    print(result.summary_text())
    print(f"run folder: {result.run_dir}")
    return EXIT_OK if result.passed else EXIT_THRESHOLD


def cmd_render(args: argparse.Namespace) -> int:
    from arcface_lab.report import render

    print(f"wrote {render(args.run_dir)}")
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

    p = sub.add_parser("export-onnx", help="export a .pth checkpoint to ONNX (dynamic batch)")
    p.add_argument("--weights", required=True, type=Path)
    p.add_argument("--arch", help="iresnet architecture; inferred when omitted")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("embed", help="embed face crops")
    _add_model_args(p)
    _add_engine_args(p)
    p.add_argument("--input", required=True, help=".npy, image folder, image, or synthetic:N")
    p.add_argument("--out", required=True, type=Path, help="float32 (N, D) .npy")
    p.add_argument("--raw", action="store_true", help="do not L2-normalize")
    p.add_argument("--info-json", type=Path, help="write what ran (backend, fallbacks) here")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("render", help="write a run folder's index.html from its JSON alone")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("run", help="a whole run from a params file: measure, then report")
    p.add_argument("params", type=Path)
    p.add_argument("--out", type=Path, help="run folder (default reports/<run-id>)")
    p.add_argument("--reports-root", type=Path, default=Path("reports"))
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
    try:
        return func(args)
    except ArcfaceLabError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"arcface-lab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"arcface-lab {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # anything unexpected: exit 1, traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(f"arcface-lab {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
