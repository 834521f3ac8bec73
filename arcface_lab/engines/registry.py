"""Backends by name, and the fallback chain that picks one.

Backends register with :func:`register_backend`; third-party packages add
theirs through the ``arcface_lab.backends`` entry-point group (each entry
point names a module or class that registers on import).
:func:`create_engine` takes a chain such as ``"tensorrt,onnxruntime,torch"``,
tries it left to right and records every skipped backend with its reason in
``engine.info.fallbacks`` (and the log): a backend that is unavailable, or whose
converter cannot take the model (:class:`ConversionError`). ``strict=True`` turns the
first skip into an error instead (:class:`BackendUnavailable`, or the
:class:`ConversionError` itself).

The chain ``"auto"`` is :func:`default_chain`: on a GPU TensorRT first, then
``torch_fast`` (FP16, channels-last, CUDA graphs: the fast path without
TensorRT), then ONNX Runtime; on a CPU OpenVINO first (BF16 at the machine's
floor; FP32 with an explicit FP32 hint), then ONNX Runtime. PyTorch eager closes
both, since it runs everywhere. ``auto`` never picks a precision the host only
emulates (:meth:`Engine.support`): such a backend is skipped with the reason. A
chain named explicitly runs an emulated precision, with a warning in ``info``.
"""

from __future__ import annotations

import fnmatch
import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from arcface_lab.config.fields import Ctx
from arcface_lab.engines.base import Engine, Fallback, Support
from arcface_lab.errors import BackendUnavailable, ConversionError, UnknownBackendError

if TYPE_CHECKING:
    from arcface_lab.config.params import Params
    from arcface_lab.core.host import Host

__all__ = [
    "BackendStatus",
    "check_params",
    "create_engine",
    "default_chain",
    "get_backend",
    "list_backends",
    "parse_chain",
    "register_backend",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "arcface_lab.backends"
_BUILTIN_MODULES = (
    "arcface_lab.engines.torch_ref",
    "arcface_lab.engines.onnxruntime",
    "arcface_lab.engines.tensorrt",
    "arcface_lab.engines.torch_fast",
    "arcface_lab.engines.openvino",
    "arcface_lab.engines.ncnn",
    "arcface_lab.engines.mnn",
)

_backends: dict[str, type[Engine]] = {}
_loaded = False
_plugin_errors: dict[str, str] = {}

E = TypeVar("E", bound=type[Engine])

#: What ``"auto"`` means, fastest first (see the module docstring).
GPU_CHAIN = ("tensorrt", "torch_fast", "onnxruntime", "torch")
CPU_CHAIN = ("openvino", "onnxruntime", "torch")
AUTO = "auto"


def register_backend(cls: E) -> E:
    """Class decorator: make an :class:`Engine` subclass available by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__}: set the class attribute 'name' to register it")
    existing = _backends.get(cls.name)
    if existing is not None and existing is not cls:
        raise TypeError(
            f"backend {cls.name!r} is already registered by {existing.__module__}."
            f"{existing.__qualname__}"
        )
    _backends[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the built-in backends
            _plugin_errors[ep.name] = f"plugin {ep.value!r} failed to load: {exc}"
            log.warning("backend plugin %s: %s", ep.name, _plugin_errors[ep.name])
            continue
        if isinstance(obj, type) and issubclass(obj, Engine) and obj.name not in _backends:
            register_backend(obj)


def get_backend(name: str) -> type[Engine]:
    """The engine class registered as ``name``."""
    _ensure_loaded()
    try:
        return _backends[name]
    except KeyError:
        known = ", ".join(sorted(_backends)) or "none"
        raise UnknownBackendError(f"unknown backend {name!r}; known backends: {known}") from None


@dataclass(frozen=True)
class BackendStatus:
    """One row of ``arcface-lab backends``."""

    name: str
    available: bool
    reason: str | None
    precisions: tuple[str, ...]
    description: str
    support: dict[str, Support] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": self.available,
            "reason": self.reason,
            "precisions": list(self.precisions),
            "support": {p: s.to_dict() for p, s in self.support.items()},
            "description": self.description,
        }


def list_backends(pattern: str = "*", host: Host | None = None) -> list[BackendStatus]:
    """Registered backends matching a glob ``pattern``: availability, and per precision
    whether ``host`` (default: this machine) runs it natively, emulated, or not at all."""
    from arcface_lab.core.host import probe

    _ensure_loaded()
    host = host or probe()
    rows = []
    for name in sorted(_backends):
        if not fnmatch.fnmatch(name, pattern):
            continue
        cls = _backends[name]
        reason = cls.availability()
        support = {p: cls.support(p, host) for p in cls.precisions}
        rows.append(
            BackendStatus(name, reason is None, reason, cls.precisions, cls.description, support)
        )
    for name, reason in sorted(_plugin_errors.items()):
        if fnmatch.fnmatch(name, pattern):
            rows.append(BackendStatus(name, False, reason, (), "plugin"))
    return rows


def check_params(params: Params) -> Params:
    """``params`` after checking its backend names and options against the registry.

    Raises:
        ParamsError: An unknown backend or option, naming the params file and field.
    """
    _ensure_loaded()
    known: dict[str, Callable[[Mapping[str, Any], Ctx], Any] | None] = {
        name: cls.parse_options for name, cls in _backends.items()
    }
    known.update({name: None for name in _plugin_errors})
    return params.check_backends(known)


def default_chain(device: str | None = None) -> list[str]:
    """The chain ``"auto"`` stands for on ``device`` (None: a GPU when the host has one)."""
    if device is None:
        from arcface_lab.core.host import probe

        gpu = bool(probe().gpus)
    else:
        gpu = str(device).startswith("cuda")
    return list(GPU_CHAIN if gpu else CPU_CHAIN)


def parse_chain(chain: str | Sequence[str], device: str | None = None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; every name must be known.

    ``"auto"`` is :func:`default_chain` for ``device``.
    """
    if isinstance(chain, str) and chain.strip().lower() == AUTO:
        chain = default_chain(device)
    names = [n.strip() for n in (chain.split(",") if isinstance(chain, str) else chain)]
    names = [n for n in names if n]
    if not names:
        raise UnknownBackendError("empty backend chain: name at least one backend")
    for name in names:
        get_backend(name)
    return names


def create_engine(
    chain: str | Sequence[str],
    model: Any,
    precision: str = "fp32",
    strict: bool = False,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> Engine:
    """The first backend in ``chain`` that can run ``model`` at ``precision``.

    ``model`` is a resolved model (:func:`arcface_lab.models.source.resolve_model`) or a
    model spec it resolves: ``"seeded:r18"``, ``"zoo:NAME"``, a ``.pth`` or ``.onnx`` path.
    Every backend skipped on the way is logged and recorded in
    ``engine.info.fallbacks``. With ``strict=True`` the first skip raises
    :class:`BackendUnavailable` instead. ``kwargs`` go to every candidate,
    ``backend_options[name]`` only to that backend. ``chain="auto"`` is
    :func:`default_chain` for the ``device`` keyword.
    """
    from arcface_lab.core.host import probe

    if isinstance(model, (str, os.PathLike)):
        from arcface_lab.models.source import resolve_model

        model = resolve_model(os.fspath(model))
    auto = isinstance(chain, str) and chain.strip().lower() == AUTO
    names = parse_chain(chain, kwargs.get("device"))
    skipped: list[Fallback] = []
    for name in names:
        cls = _backends[name]
        reason = cls.availability()
        if reason is None and precision not in cls.precisions:
            reason = (
                f"precision {precision!r} not supported (supported: {', '.join(cls.precisions)})"
            )
        emulated = None
        if reason is None:
            support = cls.support(precision, probe(), kwargs.get("device"))
            if support.status == "emulated":
                emulated = f"{precision} is emulated here: {support.reason}"
                if auto:
                    reason = f"{emulated} (auto picks native precisions only)"
        engine = None
        if reason is None:
            try:
                engine = cls(
                    model, precision=precision, **kwargs, **(backend_options or {}).get(name, {})
                )
            except BackendUnavailable as exc:
                reason = str(exc)
            except ConversionError as exc:  # the model is fine; the next backend may run it
                if strict:
                    raise
                reason = str(exc)
        if engine is not None:
            engine.info.fallbacks = skipped + engine.info.fallbacks
            if emulated and emulated not in engine.info.warnings:
                log.warning("%s: %s", name, emulated)
                engine.info.warnings.append(emulated)
            return engine
        assert reason is not None
        if strict:
            raise BackendUnavailable(f"backend {name!r} unavailable (strict): {reason}")
        log.warning("backend %s skipped: %s", name, reason)
        skipped.append(Fallback(name, reason))
    tried = "; ".join(f"{f.backend}: {f.reason}" for f in skipped)
    raise BackendUnavailable(f"no backend in {','.join(names)} can run this model: {tried}")
