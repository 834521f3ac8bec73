"""What a model spec (``--model``) names: a checkpoint, ONNX, ``seeded:<arch>`` or ``zoo:<name>``.

:class:`ModelSource` is the one object engines receive. It knows how to give
a PyTorch module (checkpoints and seeded models only) and the canonical FP32
ONNX file with a dynamic batch axis (exported, or checked and rewritten from
a given ONNX file), cached under a folder by content hash so that the export
happens once per model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab.core.files import cached, default_cache_root, file_sha256
from arcface_lab.core.preprocess import Preprocess
from arcface_lab.errors import BackendUnavailable, InputError, ModelFormatError
from arcface_lab.models.onnx_io import (
    PROTOBUF_LIMIT,
    OnnxModelInfo,
    check_finite_weights,
    export_onnx,
    external_data_files,
    inspect_onnx,
    load_onnx,
    make_batch_dynamic,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from arcface_lab.models.iresnet import IResNet

__all__ = ["ModelSource", "resolve_model"]

log = logging.getLogger(__name__)

SEEDED_PREFIX = "seeded:"


@dataclass
class ModelSource:
    """A model to embed faces with, and how its inputs are preprocessed."""

    spec: str
    kind: str  # "seeded" | "checkpoint" | "onnx" (a zoo model is an "onnx")
    path: Path | None = None
    arch: str | None = None
    seed: int = 0
    preprocess: Preprocess = field(default_factory=Preprocess)
    cache_dir: Path = field(default_factory=default_cache_root)
    _module: IResNet | None = field(default=None, repr=False)
    _onnx: Path | None = field(default=None, repr=False)
    _sha: str | None = field(default=None, repr=False)

    @property
    def has_torch_module(self) -> bool:
        return self.kind in ("seeded", "checkpoint")

    def torch_module(self) -> IResNet:
        """The model as an eval-mode FP32 PyTorch module (not for ONNX sources)."""
        if self._module is None:
            from arcface_lab.models.checkpoint import load_checkpoint_model, seeded_model

            if self.kind == "seeded":
                assert self.arch is not None
                self._module = _cached_seeded(self.arch, self.seed, self.cache_dir, seeded_model)
            elif self.kind == "checkpoint":
                assert self.path is not None
                self._module = load_checkpoint_model(self.path, self.arch)
                self.arch = self.arch or _arch_of(self._module)
            else:
                raise BackendUnavailable(
                    f"{self.spec}: an ONNX model has no PyTorch module; "
                    "use a .pth checkpoint or seeded:<arch> for the torch backend"
                )
        return self._module

    def sha256(self) -> str:
        """Content hash identifying the model (weights and, for seeded, the recipe)."""
        if self._sha is None:
            if self.kind == "seeded":
                h = hashlib.sha256(f"{self.spec}:seed={self.seed}".encode())
                for name, tensor in self.torch_module().state_dict().items():
                    h.update(name.encode())
                    h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
                self._sha = h.hexdigest()
            elif self.kind == "onnx":
                self._sha = _onnx_sha256(self.path)
            else:
                assert self.path is not None
                self._sha = file_sha256(self.path)
        return self._sha

    def onnx_path(self) -> Path:
        """The canonical FP32 ONNX file (dynamic batch), made once and cached."""
        if self._onnx is None:
            if self.kind == "onnx":
                self._onnx = self._prepare_given_onnx()
            else:
                dest = self.cache_dir / "onnx" / f"{self.sha256()}.onnx"
                h, w = self.preprocess.size

                def export(tmp: Path) -> None:
                    log.info("exporting %s to ONNX at %s", self.spec, dest)
                    export_onnx(self.torch_module(), tmp, (3, h, w))

                self._onnx = cached(dest, export, suffix=".onnx")
        return self._onnx

    def onnx_info(self) -> OnnxModelInfo:
        path = self.onnx_path()
        return inspect_onnx(load_onnx(path, load_external=False), path)

    def _prepare_given_onnx(self) -> Path:
        """The given file when it is canonical, else a cached canonical copy.

        A static batch is rewritten to dynamic; external data (``w.bin`` beside the
        model) is folded into one self-contained file, so every engine and every store
        artifact built from it stands alone.
        """
        assert self.path is not None
        model = load_onnx(self.path, load_external=False)
        info = inspect_onnx(model, self.path)
        external = external_data_files(model, self.path.parent, str(self.path))
        if info.dynamic_batch and not external:
            check_finite_weights(load_onnx(self.path), self.path)
            return self.path
        tag = "dynamic" if not info.dynamic_batch else "inline"
        dest = self.cache_dir / "onnx" / f"{self.sha256()}-{tag}.onnx"
        source = self.path

        def rewrite(tmp: Path) -> None:
            import onnx

            model = load_onnx(source)  # external data now read (locations already checked)
            check_finite_weights(model, source)
            fixed = 0
            if not info.dynamic_batch:
                log.info("%s: static batch %s rewritten to dynamic", source, info.input_shape[0])
                fixed = make_batch_dynamic(model)
            if external:
                names = ", ".join(f.name for f in external)
                log.info("%s: external data %s folded in", source, names)
                if model.ByteSize() > PROTOBUF_LIMIT:
                    raise ModelFormatError(
                        f"{source}: with its external data the model is {model.ByteSize()} "
                        f"bytes, over protobuf's 2 GiB limit for one ONNX file"
                    )
            onnx.save(model, str(tmp))
            if not info.dynamic_batch:
                _verify_dynamic_batch(tmp, self.preprocess, str(source), fixed)

        return cached(dest, rewrite, suffix=".onnx")

    def describe(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "arch": self.arch,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256(),
            "preprocess": self.preprocess.to_dict(),
            **({"zoo": _zoo_record(self.spec)} if self.spec.startswith("zoo:") else {}),
        }


def _zoo_record(spec: str) -> dict[str, Any]:
    from arcface_lab.models.zoo import zoo_entry

    return zoo_entry(spec).to_dict()


def _onnx_sha256(path: Path | None) -> str:
    """The graph file's sha256, or with external data, a hash over it and each data file."""
    assert path is not None
    graph = file_sha256(path)
    external = external_data_files(load_onnx(path, load_external=False), path.parent, str(path))
    if not external:
        return graph
    h = hashlib.sha256(f"onnx:{graph}".encode())
    for f in external:
        h.update(f"\n{f.name}:{file_sha256(f)}".encode())
    return h.hexdigest()


def _arch_of(module: IResNet) -> str:
    from arcface_lab.models.iresnet import ARCH_LAYERS

    return next((k for k, v in ARCH_LAYERS.items() if v == module.layers_config), "custom")


def _verify_dynamic_batch(path: Path, preprocess: Preprocess, source: str, fixed: int) -> None:
    """Batch of 3 must give the same rows as three batch-1 runs."""
    import onnxruntime as ort

    from arcface_lab.data.images import synthetic_faces

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = preprocess(synthetic_faces(3, seed=1, size=preprocess.size))
        name = sess.get_inputs()[0].name
        batched = sess.run(None, {name: x})[0]
        single = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(3)])
    except Exception as exc:  # ORT raises its own exception types for shape errors
        raise ModelFormatError(
            f"{source}: its static batch could not be made dynamic "
            f"({fixed} reshapes rewritten): {exc}"
        ) from None
    if batched.shape != single.shape or not np.allclose(batched, single, rtol=1e-4, atol=1e-4):
        raise ModelFormatError(
            f"{source}: after rewriting its static batch to dynamic, a batch of 3 no longer "
            "matches three single runs; export the model with a dynamic batch axis instead"
        )


def resolve_model(
    spec: str,
    arch: str | None = None,
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
) -> ModelSource:
    """Turn a model spec into a :class:`ModelSource`.

    ``spec`` is a ``.pth`` checkpoint, an ``.onnx`` file, ``seeded:<arch>`` or
    ``zoo:<name>`` (a trained model of :mod:`arcface_lab.models.zoo`, fetched and verified
    on first use). ``preprocess`` is the input convention: a :class:`Preprocess` is used
    as it is; a mapping of its fields (``{"mean": 0.0}``) overrides the model's own
    convention (a zoo entry's, else insightface's); ``None`` takes the model's own.
    """
    from arcface_lab.models.iresnet import ARCH_LAYERS
    from arcface_lab.models.zoo import ZOO_PREFIX, fetch, zoo_entry

    entry = zoo_entry(spec) if spec.startswith(ZOO_PREFIX) else None
    size_asked = not isinstance(preprocess, Preprocess) and "size" in (preprocess or {})
    if isinstance(preprocess, Preprocess):
        pre = preprocess
    else:
        own = entry.preprocess if entry is not None else Preprocess()
        pre = replace(own, **dict(preprocess or {}))
    base = ModelSource(spec=spec, kind="seeded", preprocess=pre, seed=seed)
    if cache_dir is not None:
        base = replace(base, cache_dir=Path(cache_dir))
    if spec.startswith(SEEDED_PREFIX):
        name = spec[len(SEEDED_PREFIX) :].lower()
        if name not in ARCH_LAYERS:
            raise InputError(
                f"model {spec}: unknown architecture {name!r}; "
                f"expected seeded:<{'|'.join(ARCH_LAYERS)}>",
                argument="model",
            )
        return replace(base, arch=name)
    if entry is not None:
        path = fetch(entry, base.cache_dir)
        info = inspect_onnx(load_onnx(path, load_external=False), path)
        inferred = _preprocess_from_shape(info.input_shape, pre)
        if size_asked:
            _check_size(spec, info, pre, inferred)
        return replace(base, kind="onnx", path=path, preprocess=inferred)
    path = Path(spec)
    if not path.is_file():
        raise InputError(
            f"model {spec}: no such file (expected a .pth checkpoint, an .onnx model, "
            f"seeded:<arch> or zoo:<name>; cwd {Path.cwd()})",
            argument="model",
        )
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt", ".ckpt", ".bin"):
        return replace(base, kind="checkpoint", path=path, arch=arch)
    if suffix == ".onnx":
        info = inspect_onnx(load_onnx(path, load_external=False), path)
        inferred = _preprocess_from_shape(info.input_shape, base.preprocess)
        if base.preprocess.layout == "NHWC" and inferred.layout != "NHWC":
            raise InputError(
                f"layout: {spec} takes input {info.input_name!r} of shape "
                f"{list(info.input_shape)}, which is NCHW, not NHWC",
                argument="layout",
            )
        if size_asked:
            _check_size(spec, info, base.preprocess, inferred)
        return replace(base, kind="onnx", path=path, preprocess=inferred)
    raise InputError(
        f"model {spec}: unknown suffix {suffix!r}; expected .pth, .onnx or seeded:",
        argument="model",
    )


def _check_size(spec: str, info: Any, asked: Preprocess, inferred: Preprocess) -> None:
    """An input size asked for that the model's static input shape contradicts is an error."""
    if tuple(asked.size) != tuple(inferred.size):
        raise InputError(
            f"size: {spec} takes input {info.input_name!r} of shape {list(info.input_shape)}, "
            f"so {inferred.size[0]}x{inferred.size[1]}, not the {asked.size[0]}x"
            f"{asked.size[1]} asked for",
            argument="size",
        )


def _preprocess_from_shape(shape: tuple[int | str, ...], default: Preprocess) -> Preprocess:
    _, a, b, c = shape
    if c == 3 and a != 3:
        layout, hw = "NHWC", (a, b)
    else:
        layout, hw = "NCHW", (b, c)
    size = tuple(int(d) for d in hw) if all(isinstance(d, int) for d in hw) else default.size
    return replace(default, layout=layout, size=size)  # type: ignore[arg-type]


def _cached_seeded(
    arch: str, seed: int, cache_dir: Path, make: Callable[[str, int], IResNet]
) -> IResNet:
    """``make(arch, seed)``, its weights kept in ``cache_dir/seeded`` and verified before use.

    Making seeded weights calibrates BatchNorm on synthetic faces (seconds for r18, more
    for r100), and every engine process needs them. The file is keyed by the recipe (the
    source of ``make``) and the torch version, written atomically with its sha256 beside
    it, checked against that sha256 before ``torch.load(weights_only=True)``; a copy that
    does not match is quarantined and made again (:func:`arcface_lab.core.files.cached`).
    """
    import inspect

    import torch

    from arcface_lab.models.iresnet import build_iresnet

    recipe = hashlib.sha256(inspect.getsource(make).encode()).hexdigest()[:12]
    path = cache_dir / "seeded" / f"{arch}-seed{seed}-torch{torch.__version__}-{recipe}.pt"
    made: list[IResNet] = []

    def save(tmp: Path) -> None:
        made.append(make(arch, seed))
        torch.save(made[0].state_dict(), tmp)

    try:
        cached(path, save, suffix=".pt")
    except OSError as exc:  # a read-only cache costs time, never the run
        log.warning("seeded weights not cached in %s: %s", path.parent, exc)
    if made:
        return made[0]
    if not path.is_file():
        return make(arch, seed)
    module = build_iresnet(arch)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return module.eval()
