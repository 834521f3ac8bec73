"""The engine protocol every backend implements.

:class:`Engine` does the bookkeeping once (input checks, preprocessing,
batching, L2 normalization, the ``info`` record, the context manager); a
backend overrides only what differs:

- ``availability()`` (classmethod): ``None`` if it can run here, else why not;
- ``_support(precision, host, kind)`` (classmethod, optional): whether a precision is
  native, emulated or unavailable on a host (default: native wherever it runs);
- ``_load()``: build or load whatever runs the model;
- ``_infer(x)``: one preprocessed float32 batch in, raw ``(n, D)`` embeddings out;
- ``_close()`` (optional): release it.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from arcface_lab.config.fields import Ctx, option_names, parse_mapping, parse_options
from arcface_lab.config.params import PRECISIONS
from arcface_lab.core.preprocess import check_images
from arcface_lab.errors import BackendUnavailable, EngineError, InputError

if TYPE_CHECKING:
    from arcface_lab.core.host import Host

__all__ = ["PRECISIONS", "Engine", "EngineInfo", "Fallback", "NoOptions", "Support", "own_kernels"]

log = logging.getLogger(__name__)

#: Options every engine accepts (a chain passes them to each candidate); backends that
#: have no use for one ignore it.
COMMON_OPTIONS = frozenset({"store", "batch_min", "batch_opt", "batch_max", "threads"})


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none of its own."""


@dataclass(frozen=True)
class Support:
    """Whether a backend runs a precision on a host, and how.

    ``native``: the hardware computes in that precision (or the precision is FP32);
    ``emulated``: it runs, but the arithmetic is converted or emulated, so it is slow or
    measures only weight rounding, or its kernels ignore an ISA cap (``ONEDNN_MAX_CPU_ISA``)
    so its speed is not the capped class's (never picked by ``auto`` or tried by optimize);
    ``unavailable``: it cannot run here. ``reason`` says why for the last two, and may
    carry a note for ``native`` (INT8 without VNNI needs the overflow fix).
    """

    status: Literal["native", "emulated", "unavailable"]
    reason: str = ""

    @property
    def native(self) -> bool:
        return self.status == "native"

    def to_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


def own_kernels(host: Host, kernels: str) -> Support:
    """FP32 on a CPU for a library whose ``kernels`` pick their ISA from CPUID themselves.

    Native, except under an ISA cap (``ONEDNN_MAX_CPU_ISA``), which such kernels ignore:
    there their speed is not the capped class's, so optimize must not time them as it.
    """
    if host.cpu.isa_cap:
        return Support(
            "emulated",
            f"its {kernels} ignore the ISA cap ({host.cpu.isa_cap}): they run every "
            f"instruction this {host.cpu.generation or 'CPU'} has, so its speed here is "
            f"not {host.cls}'s",
        )
    return Support("native")


def device_kind(device: str | None) -> str:
    """``"cuda"`` for ``cuda``/``cuda:N``, else ``"cpu"``."""
    return "cuda" if str(device or "").startswith("cuda") else "cpu"


@dataclass(frozen=True)
class Fallback:
    """A backend that was asked for and skipped, and why."""

    backend: str
    reason: str


@dataclass
class EngineInfo:
    """What ran: recorded in every result so a figure can be traced to its engine."""

    backend: str
    precision: str
    device: str
    model: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)
    artifact: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        """A readable block: what ran, on what, from which artifact, and what was skipped."""
        spec = self.model.get("spec", "?")
        lines = [
            f"engine     {self.backend}/{self.precision} on {self.device}",
            f"model      {spec}"
            + (f" (sha256 {self.model['sha256'][:16]})" if self.model.get("sha256") else ""),
        ]
        art = self.artifact
        if art:
            key = str(art.get("key", ""))[:16]
            lines.append(f"artifact   {art.get('kind', '?')} {key} ({art.get('origin', '?')})")
        for f in self.fallbacks:
            lines.append(f"skipped    {f.backend}: {f.reason}")
        for w in self.warnings:
            lines.append(f"warning    {w}")
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        if versions:
            lines.append(f"versions   {versions}")
        return "\n".join(lines)


class Engine(ABC):
    """Face crops in, ``(N, D)`` float32 embeddings out.

    Args:
        model: the :class:`~arcface_lab.models.source.ModelSource` to run.
        precision: one of the backend's ``precisions``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; ``None`` picks the backend's default.
        batch_size: the largest batch sent to the backend at once.
        options: backend-specific settings (documented on each backend).
    """

    #: Registry name; set by each backend.
    name: ClassVar[str] = ""
    #: Precisions this backend can run.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    #: One line for ``arcface-lab backends``.
    description: ClassVar[str] = ""
    #: ``(module, how to install it)`` pairs this backend cannot run without.
    requires: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: The backend's own options: a frozen dataclass of :func:`~arcface_lab.config.fields.option`
    #: fields (default, parser, documentation), parsed into ``self.opts``.
    Options: ClassVar[type] = NoOptions
    #: Backend-specific option names (from ``Options``); anything else (a typo) is an error.
    option_names: ClassVar[frozenset[str]] = frozenset()
    #: Runs only models that have a PyTorch module (``.pth``, ``seeded:``), not ``.onnx``.
    needs_torch: ClassVar[bool] = False
    #: Device kinds (``cpu``, ``cuda``) this backend can run on.
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: Expected speedup over torch eager FP32 per ``(device kind, precision)``, measured on
    #: this project's machines (docs/performance.md). It only orders optimize's candidates,
    #: so a small budget tries the most promising first; it is never a target.
    expected_speedup: ClassVar[dict[tuple[str, str], float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Options" in cls.__dict__:
            cls.option_names = option_names(cls.Options)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], ctx: Ctx | None = None) -> Any:
        """``options`` checked and read into :attr:`Options` (the common ones left aside).

        ``ctx`` says where they came from (a params file's ``backends.options.<name>``);
        by default ``"<name> options"``.

        Raises:
            ParamsError: an unknown option name or a bad value, naming the field.
        """
        ctx = ctx or Ctx(f"{cls.name} options")
        parse_mapping(options, ctx, tuple(sorted(COMMON_OPTIONS | cls.option_names)))
        own = {k: v for k, v in options.items() if k in cls.option_names}
        if cls.Options is NoOptions:
            return NoOptions()
        return parse_options(cls.Options, own, ctx)

    def __init__(
        self,
        model: Any,
        precision: str = "fp32",
        device: str | None = None,
        batch_size: int = 32,
        **options: Any,
    ) -> None:
        if precision not in self.precisions:
            raise BackendUnavailable(
                f"{self.name}: precision {precision!r} not supported "
                f"(supported: {', '.join(self.precisions)})"
            )
        if batch_size < 1:
            raise InputError(f"batch_size: expected >= 1, got {batch_size}", argument="batch_size")
        #: The backend's own options, parsed (``self.options`` keeps what was given).
        self.opts = self.parse_options(options)
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.options = options
        self.info = EngineInfo(
            backend=self.name,
            precision=precision,
            device=device or "cpu",
            model={"spec": getattr(model, "spec", str(model))},
        )
        self._loaded = False
        self.device = device
        self._load()
        self._loaded = True

    # -- what a backend implements -------------------------------------------------------

    @classmethod
    def availability(cls) -> str | None:
        """``None`` when this backend can run here, else the reason it cannot.

        Checks ``requires`` without importing anything; backends with more to check
        (a device, a driver) extend this.
        """
        for module, install in cls.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: {install}"
        return None

    @classmethod
    def support(
        cls, precision: str, host: Host | None = None, device: str | None = None
    ) -> Support:
        """Whether ``precision`` runs natively, emulated, or not at all on ``host``.

        ``device`` (``cpu``, ``cuda``, ``cuda:N``) defaults to where optimize runs on
        ``host`` (its GPU when it has one); ``host`` defaults to
        :func:`~arcface_lab.core.host.probe`.
        """
        from arcface_lab.core.host import probe

        host = host or probe()
        kind = device_kind(device or host.device)
        reason = cls.availability()
        if reason is not None:
            return Support("unavailable", reason)
        if precision not in cls.precisions:
            return Support(
                "unavailable",
                f"precision {precision!r} not supported (supported: {', '.join(cls.precisions)})",
            )
        if kind not in cls.devices:
            return Support("unavailable", f"runs on {' or '.join(cls.devices)} only, not {kind}")
        if kind == "cuda" and not host.gpus:
            return Support("unavailable", "no CUDA GPU on this host")
        return cls._support(precision, host, kind)

    @classmethod
    def _support(cls, precision: str, host: Host, kind: str) -> Support:
        """What ``precision`` is on ``host``'s ``kind`` device; backends that emulate override."""
        return Support("native")

    @classmethod
    def candidate_options(cls, precision: str, host: Host) -> list[tuple[dict[str, Any], float]]:
        """Option sets worth trying for ``precision`` in optimize, each with its expected speedup.

        Default: the backend's defaults alone. A backend with options that change speed or
        accuracy (OpenVINO's INT8 search on or off) returns one entry per setting.
        """
        kind = device_kind(host.device)
        return [({}, cls.expected_speedup.get((kind, precision), 1.0))]

    @abstractmethod
    def _load(self) -> None:
        """Build or load the runnable model; fill ``self.info``."""

    @abstractmethod
    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Raw embeddings for one preprocessed float32 batch."""

    def _close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release what ``_load`` acquired."""

    # -- helpers for backends ----------------------------------------------------------

    def _artifact(
        self,
        kind: str,
        inputs: Mapping[str, Any],
        build: Callable[[Path], Mapping[str, Any] | None],
        main: bool = True,
    ) -> Path:
        """A verified local path to the artifact ``inputs`` describe, built on a miss.

        Goes through the engine store given as the ``store`` option (an
        :class:`~arcface_lab.store.EngineStore`; default: a local store under the
        model's cache folder), so a second run skips the build. ``inputs`` must hold
        everything that makes the artifact valid (see :func:`arcface_lab.store.artifact_key`).
        The origin (``built``, ``local`` or ``remote``) and any store warnings are
        recorded in ``info``: the main artifact in ``info.artifact``, others in
        ``info.details["artifacts"]``.
        """
        from arcface_lab.store import EngineStore, LocalStore

        store = self.options.get("store")
        if store is None:
            store = EngineStore(LocalStore(self.model.cache_dir / "engines"))
        art = store.fetch_or_build({"artifact": kind, "backend": self.name, **inputs}, build)
        record = {
            "kind": kind,
            "key": art.key,
            "origin": art.origin,
            "sha256": art.sha256,
            "size": art.size,
        }
        if main:
            self.info.artifact = record
        else:
            self.info.details.setdefault("artifacts", []).append(record)
        self.info.warnings.extend(art.warnings)  # the store logged each one already
        return art.path

    # -- what every engine gets -----------------------------------------------------------

    def embed(
        self, images: np.ndarray, normalize: bool = True, batch_size: int | None = None
    ) -> np.ndarray:
        """Embeddings of ``uint8 (N, H, W, 3)`` RGB face crops, L2-normalized unless asked not."""
        if not self._loaded:
            raise EngineError(f"{self.name}: engine is closed")
        preprocess = self.model.preprocess
        check_images(images, preprocess.size)
        step = batch_size or self.batch_size
        chunks = []
        for start in range(0, len(images), step):
            x = preprocess(images[start : start + step])
            out = np.asarray(self._infer(x), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != x.shape[0]:
                raise EngineError(
                    f"{self.name} on {self.model.spec}: expected ({x.shape[0]}, D) embeddings, "
                    f"got {out.shape}"
                )
            chunks.append(out)
        emb = np.concatenate(chunks)
        if not np.all(np.isfinite(emb)):
            bad = int(np.count_nonzero(~np.isfinite(emb).all(axis=1)))
            raise EngineError(
                f"{self.name} {self.precision} on {self.model.spec}: {bad} of {len(emb)} "
                "embeddings are not finite (overflow in reduced precision?)"
            )
        if normalize:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return emb

    def close(self) -> None:
        if self._loaded:
            self._close()
            self._loaded = False

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(precision={self.precision!r}, device={self.info.device!r})"
