"""Params files: one YAML file describes a run; thresholds live here, never in code.

Every section is a frozen dataclass validated on construction. Unknown keys
are errors (a typo must not silently fall back to a default), and every
message names the file and the dotted field, e.g.
``params/ci.yaml: thresholds.cosine_min.fp16: expected a number in (0, 1], got 'high'``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arcface_lab.config.fields import (
    Ctx,
    parse_bool,
    parse_float,
    parse_int,
    parse_list,
    parse_mapping,
    parse_opt_str,
    parse_str,
)
from arcface_lab.core.preprocess import LAYOUTS, Preprocess
from arcface_lab.core.version import REPO_ROOT
from arcface_lab.errors import ParamsError

__all__ = [
    "BUILTIN_DETECTORS",
    "PRECISIONS",
    "BackendParams",
    "BenchParams",
    "DataParams",
    "FacesParams",
    "ModelParams",
    "MtcnnParams",
    "OptimizeParams",
    "Params",
    "RealignParams",
    "ReenrolmentParams",
    "SpeedTarget",
    "StoreParams",
    "Thresholds",
    "default_params_file",
    "load_params",
]

#: Every precision name arcface_lab knows; each backend supports a subset.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def _per_precision(value: Any, ctx: Ctx, lo: float, hi: float) -> dict[str, float]:
    m = parse_mapping(value, ctx, PRECISIONS)
    return {k: parse_float(v, ctx.child(k), lo, hi) for k, v in m.items()}


@dataclass(frozen=True)
class ModelParams:
    """The model and the input-convention fields a params file sets.

    A field left out (``None``) is the model's own convention: a zoo entry's, else
    :class:`Preprocess`'s (insightface's).
    """

    spec: str = "seeded:r50"
    arch: str | None = None
    seed: int = 0
    mean: float | None = None
    std: float | None = None
    bgr: bool | None = None
    layout: str | None = None
    size: tuple[int, int] | None = None

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> ModelParams:
        # a convention field given as null (as a run's environment.json writes it back)
        # is the same as one left out: the model's own convention
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        size = m.get("size")
        if size is not None and (not isinstance(size, list | tuple) or len(size) != 2):
            raise ctx.child("size").error("[height, width]", size)
        return cls(
            spec=parse_str(m.get("spec", cls.spec), ctx.child("spec")),
            arch=parse_opt_str(m.get("arch"), ctx.child("arch")),
            seed=parse_int(m.get("seed", cls.seed), ctx.child("seed")),
            mean=(
                None if m.get("mean") is None else parse_float(m["mean"], ctx.child("mean"), 0, 255)
            ),
            std=None if m.get("std") is None else parse_float(m["std"], ctx.child("std"), 1e-6),
            bgr=None if m.get("bgr") is None else parse_bool(m["bgr"], ctx.child("bgr")),
            layout=(
                None
                if m.get("layout") is None
                else parse_str(m["layout"], ctx.child("layout"), LAYOUTS)
            ),
            size=(
                None
                if size is None
                else (
                    parse_int(size[0], ctx.child("size"), 1),
                    parse_int(size[1], ctx.child("size"), 1),
                )
            ),
        )

    def overrides(self) -> dict[str, Any]:
        """The convention fields this params file sets (what ``resolve_model`` overrides)."""
        fields = ("mean", "std", "bgr", "layout", "size")
        return {k: getattr(self, k) for k in fields if getattr(self, k) is not None}

    def preprocess(self) -> Preprocess:
        """These fields over insightface's convention (a zoo model's own is not known here)."""
        return dataclasses.replace(Preprocess(), **self.overrides())


@dataclass(frozen=True)
class BackendParams:
    chain: tuple[str, ...] = ("onnxruntime", "torch")
    reference: str = "torch"
    precisions: tuple[str, ...] = ("fp32", "fp16")
    strict: bool = False
    batch_size: int = 32
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> BackendParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        chain = parse_list(m.get("chain", list(cls.chain)), ctx.child("chain"))
        precisions = parse_list(m.get("precisions", list(cls.precisions)), ctx.child("precisions"))
        options = m.get("options", {}) or {}
        if not isinstance(options, Mapping) or not all(
            isinstance(v, Mapping) for v in options.values()
        ):
            raise ctx.child("options").error("a mapping of backend name to options", options)
        for name in options:
            parse_str(name, ctx.child("options"))
        return cls(
            chain=tuple(parse_str(c, ctx.child("chain")) for c in chain),
            reference=parse_str(m.get("reference", cls.reference), ctx.child("reference")),
            precisions=tuple(parse_str(p, ctx.child("precisions"), PRECISIONS) for p in precisions),
            strict=parse_bool(m.get("strict", False), ctx.child("strict")),
            batch_size=parse_int(m.get("batch_size", cls.batch_size), ctx.child("batch_size"), 1),
            options={str(k): dict(v) for k, v in options.items()},
        )


@dataclass(frozen=True)
class DataParams:
    """Validation faces and pairs, and held-out faces no engine is calibrated or gated on.

    ``held_out`` as ``synthetic:N`` draws faces with a seed of their own, never the
    validation faces'.
    """

    images: str = "synthetic:64"
    pairs: str = "synthetic:200"
    flip: bool = True
    held_out: str = "synthetic:64"

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> DataParams:
        m = parse_mapping(raw, ctx, ("images", "pairs", "flip", "held_out"))
        return cls(
            images=parse_str(m.get("images", cls.images), ctx.child("images")),
            pairs=parse_str(m.get("pairs", cls.pairs), ctx.child("pairs")),
            flip=parse_bool(m.get("flip", True), ctx.child("flip")),
            held_out=parse_str(m.get("held_out", cls.held_out), ctx.child("held_out")),
        )


@dataclass(frozen=True)
class MtcnnParams:
    """MTCNN's search (``faces.detector: mtcnn``): the smallest face it looks for in pixels
    (``min_size``), the image pyramid's scale step (``factor``), and the score P-Net and
    R-Net candidates need to go on (``thresholds``; O-Net's is ``faces.score_min``),
    Zhang et al.'s values by default; ``average_views``: each face's landmarks are O-Net's
    mean over ten views of it (shifted and mirrored crops) rather than one crop's."""

    min_size: int = 20
    factor: float = 0.709
    thresholds: tuple[float, float] = (0.6, 0.7)
    average_views: bool = True

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> MtcnnParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        steps = parse_list(m.get("thresholds", list(cls.thresholds)), ctx.child("thresholds"))
        if len(steps) != 2:
            raise ctx.child("thresholds").error("two scores: [P-Net, R-Net]", steps)
        pnet, rnet = (
            parse_float(v, ctx.child("thresholds").child(str(i)), 0.0, 1.0)
            for i, v in enumerate(steps)
        )
        return cls(
            min_size=parse_int(m.get("min_size", cls.min_size), ctx.child("min_size"), 12),
            factor=parse_float(m.get("factor", cls.factor), ctx.child("factor"), 0.1, 0.95),
            thresholds=(pnet, rnet),
            average_views=parse_bool(
                m.get("average_views", cls.average_views), ctx.child("average_views")
            ),
        )


@dataclass(frozen=True)
class RealignParams:
    """How steady alignment must be (``arcface-lab align --check``, the real-faces run):
    an aligned crop, aligned again, must find its five landmarks within ``px_median``
    (median over crops) and ``px_max`` (every crop) pixels of where the first alignment
    put them, on average over the five, and its embedding must keep cosine at least
    ``cosine_min`` against the first alignment's; no crop may be lost."""

    px_median: float = 1.5
    px_max: float = 3.0
    cosine_min: float = 0.98

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> RealignParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        return cls(
            px_median=parse_float(m.get("px_median", cls.px_median), ctx.child("px_median"), 0.0),
            px_max=parse_float(m.get("px_max", cls.px_max), ctx.child("px_max"), 0.0),
            cosine_min=parse_float(
                m.get("cosine_min", cls.cosine_min), ctx.child("cosine_min"), 0.0, 1.0
            ),
        )


#: How a gallery can be stored (:mod:`arcface_lab.measure.storage`).
GALLERY_STORAGES = ("float16", "int8", "pq64", "ivfpq64")
#: The face detectors that are not ONNX files: MTCNN (``zoo:mtcnn-*``).
BUILTIN_DETECTORS = ("mtcnn",)


@dataclass(frozen=True)
class FacesParams:
    """Finding faces in photos: the detector, and what counts as a face.

    ``detector``: ``mtcnn`` (five landmarks of its own, the ArcFace template's convention;
    searched as ``mtcnn`` says), or an ONNX box detector (``zoo:NAME`` or ``.onnx``)
    followed by the 68-point ``landmarks`` model (reduced to five; used only then).
    ``score_min``: a detection below it is not a face (MTCNN: O-Net's score);
    ``nms_iou``: two boxes overlapping more are one face (ONNX detector; MTCNN's own
    suppression is part of its algorithm); ``min_face_px``: a face whose box is smaller
    on its short side is recorded as ``too_small`` and not aligned (an upscaled face is
    not one the model saw). ``refine_steps``: times each face's landmarks are found again
    on its own aligned crop and mapped back to the photo before the final crop (the
    detector sees the face upright and at the template's scale, where it is steadiest;
    0: the photo's landmarks as found); a face not found again on its own crop is
    ``unsteady`` and not aligned. ``shift_px``: the shift of the genuine pairs made from
    real faces (``faces:`` data). ``realign``: the targets of the re-alignment check.
    """

    detector: str = "mtcnn"
    landmarks: str = "zoo:faceplugin-landmarks"
    score_min: float = 0.7
    nms_iou: float = 0.4
    min_face_px: int = 24
    refine_steps: int = 3
    shift_px: int = 3
    mtcnn: MtcnnParams = field(default_factory=MtcnnParams)
    realign: RealignParams = field(default_factory=RealignParams)

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> FacesParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        return cls(
            detector=parse_str(m.get("detector", cls.detector), ctx.child("detector")),
            landmarks=parse_str(m.get("landmarks", cls.landmarks), ctx.child("landmarks")),
            score_min=parse_float(
                m.get("score_min", cls.score_min), ctx.child("score_min"), 0.0, 1.0
            ),
            nms_iou=parse_float(m.get("nms_iou", cls.nms_iou), ctx.child("nms_iou"), 0.0, 1.0),
            min_face_px=parse_int(
                m.get("min_face_px", cls.min_face_px), ctx.child("min_face_px"), 1
            ),
            refine_steps=parse_int(
                m.get("refine_steps", cls.refine_steps), ctx.child("refine_steps"), 0
            ),
            shift_px=parse_int(m.get("shift_px", cls.shift_px), ctx.child("shift_px"), 1),
            mtcnn=MtcnnParams.parse(m.get("mtcnn"), ctx.child("mtcnn")),
            realign=RealignParams.parse(m.get("realign"), ctx.child("realign")),
        )


@dataclass(frozen=True)
class ReenrolmentParams:
    """When switching engines needs the gallery enrolled again (the scale section's
    ``reenrolment`` block): a gallery enrolled with the reference, probes embedded by the
    chosen engine, judged at the reference's own operating thresholds.

    At each of ``fars`` (1:1), re-enrolment is required when the mixed TAR falls more
    than ``tar_loss_max`` below the reference's, or the FAR it really gives exceeds
    ``far_inflation_max`` times the target; at each of ``fpirs`` (1:N), when the mixed
    FNIR rises more than ``fnir_rise_max`` or the FPIR exceeds ``far_inflation_max``
    times its target.
    """

    fars: tuple[float, ...] = (1e-3, 1e-4)
    fpirs: tuple[float, ...] = (1e-2,)
    tar_loss_max: float = 0.01
    fnir_rise_max: float = 0.01
    far_inflation_max: float = 2.0

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> ReenrolmentParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))

        def rates(key: str, default: tuple[float, ...]) -> tuple[float, ...]:
            if m.get(key) == []:  # none: that mode is not judged
                return ()
            values = parse_list(m[key], ctx.child(key)) if key in m else list(default)
            return tuple(
                parse_float(v, ctx.child(key).child(str(i)), 0.0, 1.0, open_lo=True)
                for i, v in enumerate(values)
            )

        return cls(
            fars=rates("fars", cls.fars),
            fpirs=rates("fpirs", cls.fpirs),
            tar_loss_max=parse_float(
                m.get("tar_loss_max", cls.tar_loss_max), ctx.child("tar_loss_max"), 0.0, 1.0
            ),
            fnir_rise_max=parse_float(
                m.get("fnir_rise_max", cls.fnir_rise_max), ctx.child("fnir_rise_max"), 0.0, 1.0
            ),
            far_inflation_max=parse_float(
                m.get("far_inflation_max", cls.far_inflation_max),
                ctx.child("far_inflation_max"),
                1.0,
            ),
        )


@dataclass(frozen=True)
class ScaleParams:
    """The main job's scale section: a labelled synthetic set through the chosen engine.

    ``faces``: how many (0: no scale section), sized to take about a minute on the
    machine the params are for; ``faces_per_identity``: images per synthetic identity;
    ``fars`` / ``fpirs``: the all-pairs and 1:N operating points; ``gate_far``: the FAR at
    which ``thresholds.tar_delta_max`` judges the engine's TAR against the reference's;
    ``gallery_storage``: the compressed galleries whose cost is measured on the chosen
    engine's embeddings (:data:`arcface_lab.measure.storage.STORAGES`; empty: none);
    ``ivf_lists`` / ``ivf_probes``: the inverted file of ``ivfpq64`` (its coarse centroids,
    and how many of them a search visits).
    """

    faces: int = 0
    faces_per_identity: int = 4
    shard_size: int = 1024
    fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    fpirs: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    gate_far: float = 1e-3
    gallery_storage: tuple[str, ...] = ()
    ivf_lists: int = 16
    ivf_probes: int = 4

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> ScaleParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))

        def rates(key: str, default: tuple[float, ...]) -> tuple[float, ...]:
            values = parse_list(m.get(key, list(default)), ctx.child(key))
            return tuple(
                parse_float(v, ctx.child(key).child(str(i)), 1e-12, 0.999999)
                for i, v in enumerate(values)
            )

        faces = parse_int(m.get("faces", 0), ctx.child("faces"))
        per = parse_int(
            m.get("faces_per_identity", cls.faces_per_identity), ctx.child("faces_per_identity"), 2
        )
        if faces and faces < 2 * per:
            raise ctx.child("faces").error(
                f"0 (no scale section) or at least {2 * per} faces (two identities)", faces
            )
        lists = parse_int(m.get("ivf_lists", cls.ivf_lists), ctx.child("ivf_lists"), 1)
        probes = parse_int(m.get("ivf_probes", cls.ivf_probes), ctx.child("ivf_probes"), 1)
        if probes > lists:
            raise ctx.child("ivf_probes").error(f"at most ivf_lists ({lists})", probes)
        return cls(
            faces=faces,
            faces_per_identity=per,
            shard_size=parse_int(m.get("shard_size", cls.shard_size), ctx.child("shard_size"), 1),
            fars=rates("fars", cls.fars),
            fpirs=rates("fpirs", cls.fpirs),
            gate_far=parse_float(
                m.get("gate_far", cls.gate_far), ctx.child("gate_far"), 1e-12, 0.999999
            ),
            gallery_storage=tuple(
                parse_str(v, ctx.child("gallery_storage").child(str(i)), GALLERY_STORAGES)
                for i, v in enumerate(
                    parse_list(m["gallery_storage"], ctx.child("gallery_storage"))
                    if m.get("gallery_storage")
                    else []
                )
            ),
            ivf_lists=lists,
            ivf_probes=probes,
        )


@dataclass(frozen=True)
class OptimizeParams:
    """How ``optimize`` searches: candidates are ``backends.chain`` x ``backends.precisions``.

    ``budget_s``: wall seconds for all candidates (the reference excluded); a candidate
    not started, or stopped, when it is spent is ``over_budget``. ``emulated``: also try
    precisions this host only emulates (off: they are listed as ``not_native``).
    ``prune``: a candidate whose best case cannot reach the lower end of the fastest
    passing one's speedup interval is not timed (``cannot_win``); off, every candidate is
    timed in full (``make bench`` compares them all).
    """

    budget_s: float = 1800.0
    emulated: bool = False
    prune: bool = True

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> OptimizeParams:
        m = parse_mapping(raw, ctx, ("budget_s", "emulated", "prune"))
        return cls(
            budget_s=parse_float(m.get("budget_s", cls.budget_s), ctx.child("budget_s"), 1.0),
            emulated=parse_bool(m.get("emulated", cls.emulated), ctx.child("emulated")),
            prune=parse_bool(m.get("prune", cls.prune), ctx.child("prune")),
        )


@dataclass(frozen=True)
class BenchParams:
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    warmup_s: float = 1.0
    budget_s: float = 10.0
    min_repeats: int = 3
    target_cov: float = 0.025
    #: Timed repeats at least at ``thresholds.speedup_batch``, where the speedup is judged
    #: (0: ``min_repeats``), so its 95 % interval is narrow enough to judge by.
    speed_repeats: int = 0

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> BenchParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        sizes = parse_list(m.get("batch_sizes", list(cls.batch_sizes)), ctx.child("batch_sizes"))
        return cls(
            batch_sizes=tuple(parse_int(b, ctx.child("batch_sizes"), 1) for b in sizes),
            warmup_s=parse_float(m.get("warmup_s", cls.warmup_s), ctx.child("warmup_s")),
            budget_s=parse_float(m.get("budget_s", cls.budget_s), ctx.child("budget_s")),
            min_repeats=parse_int(
                m.get("min_repeats", cls.min_repeats), ctx.child("min_repeats"), 1
            ),
            target_cov=parse_float(
                m.get("target_cov", cls.target_cov), ctx.child("target_cov"), 0, 1
            ),
            speed_repeats=parse_int(
                m.get("speed_repeats", cls.speed_repeats), ctx.child("speed_repeats"), 0
            ),
        )


@dataclass(frozen=True)
class StoreParams:
    """The engine store: a local folder and an optional shared S3 cache.

    ``connect_timeout_s``, ``read_timeout_s`` and ``max_attempts`` bound each S3 request
    (None: the store's short defaults, 3 s, 10 s and 2 attempts), so an endpoint that
    hangs costs seconds before the local build.
    """

    local: str | None = None
    s3: str | None = None
    s3_endpoint: str | None = None
    connect_timeout_s: float | None = None
    read_timeout_s: float | None = None
    max_attempts: int | None = None

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> StoreParams:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        s3 = parse_opt_str(m.get("s3"), ctx.child("s3"))
        if s3 is not None and not s3.startswith("s3://"):
            raise ctx.child("s3").error("s3://BUCKET/PREFIX", s3)

        def seconds(name: str) -> float | None:
            value = m.get(name)
            return None if value is None else parse_float(value, ctx.child(name), 0, 600, True)

        attempts = m.get("max_attempts")
        return cls(
            local=parse_opt_str(m.get("local"), ctx.child("local")),
            s3=s3,
            s3_endpoint=parse_opt_str(m.get("s3_endpoint"), ctx.child("s3_endpoint")),
            connect_timeout_s=seconds("connect_timeout_s"),
            read_timeout_s=seconds("read_timeout_s"),
            max_attempts=None if attempts is None else parse_int(attempts, ctx, 1),
        )

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`arcface_lab.store.open_store`."""
        return dataclasses.asdict(self)


_CLASS_PREFIXES = ("cpu-", "gpu-")


@dataclass(frozen=True)
class SpeedTarget:
    """The chosen engine's speedup over torch eager FP32 on one hardware class.

    ``floor`` states what that class's hardware allows (measured peak per precision and
    the resulting best time for the model), so a target can be judged against it.
    """

    speedup_min: float
    floor: str = ""

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> SpeedTarget:
        m = parse_mapping(raw, ctx, ("speedup_min", "floor"))
        if "speedup_min" not in m:
            raise ctx.child("speedup_min").error("a number (the class's target)", None)
        return cls(
            speedup_min=parse_float(m["speedup_min"], ctx.child("speedup_min"), 0, 1e6),
            floor=str(m.get("floor", "")),
        )


def _speed_targets(value: Any, ctx: Ctx) -> dict[str, SpeedTarget]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error("a mapping of hardware class (or glob, gpu-*) to a speed target", value)
    out = {}
    for key, raw in value.items():
        if not isinstance(key, str) or not key.startswith(_CLASS_PREFIXES):
            raise ctx.error("hardware class names such as cpu-avx2, cpu-avx512-bf16, gpu-*", key)
        out[key] = SpeedTarget.parse(raw, ctx.child(key))
    return out


@dataclass(frozen=True)
class Thresholds:
    """Acceptance targets. Missing entries are simply not checked.

    Accuracy gates are per precision; speed targets (``speed_targets``) are per hardware
    class, for the engine optimize chooses, at batch ``speedup_batch``.
    """

    cosine_min: dict[str, float] = field(default_factory=dict)
    accuracy_delta_max: dict[str, float] = field(default_factory=dict)
    decision_flips_max: int | None = None
    speed_targets: dict[str, SpeedTarget] = field(default_factory=dict)
    speedup_batch: int = 32
    vram_mb_max: float | None = None
    #: The scale section: |TAR delta| at ``scale.gate_far``, engine against reference.
    tar_delta_max: float | None = None
    target_note: str = ""

    @classmethod
    def parse(cls, raw: Any, ctx: Ctx) -> Thresholds:
        m = parse_mapping(raw, ctx, tuple(f.name for f in dataclasses.fields(cls)))
        flips, vram = m.get("decision_flips_max"), m.get("vram_mb_max")
        return cls(
            cosine_min=_per_precision(m.get("cosine_min"), ctx.child("cosine_min"), 0, 1),
            accuracy_delta_max=_per_precision(
                m.get("accuracy_delta_max"), ctx.child("accuracy_delta_max"), 0, 1
            ),
            decision_flips_max=(
                None if flips is None else parse_int(flips, ctx.child("decision_flips_max"))
            ),
            speed_targets=_speed_targets(m.get("speed_targets"), ctx.child("speed_targets")),
            speedup_batch=parse_int(m.get("speedup_batch", 32), ctx.child("speedup_batch"), 1),
            vram_mb_max=None if vram is None else parse_float(vram, ctx.child("vram_mb_max")),
            tar_delta_max=(
                None
                if m.get("tar_delta_max") is None
                else parse_float(m["tar_delta_max"], ctx.child("tar_delta_max"), 0.0, 1.0)
            ),
            target_note=str(m.get("target_note", "")),
        )

    def speed_target(self, hardware_class: str) -> tuple[str, SpeedTarget] | None:
        """``(key, target)`` for ``hardware_class``: an exact key first, then the first glob."""
        if hardware_class in self.speed_targets:
            return hardware_class, self.speed_targets[hardware_class]
        for key, target in self.speed_targets.items():
            if fnmatch.fnmatchcase(hardware_class, key):
                return key, target
        return None


@dataclass(frozen=True)
class Params:
    """A whole run."""

    name: str = "default"
    model: ModelParams = field(default_factory=ModelParams)
    backends: BackendParams = field(default_factory=BackendParams)
    data: DataParams = field(default_factory=DataParams)
    bench: BenchParams = field(default_factory=BenchParams)
    store: StoreParams = field(default_factory=StoreParams)
    thresholds: Thresholds = field(default_factory=Thresholds)
    optimize: OptimizeParams = field(default_factory=OptimizeParams)
    faces: FacesParams = field(default_factory=FacesParams)
    scale: ScaleParams = field(default_factory=ScaleParams)
    reenrolment: ReenrolmentParams = field(default_factory=ReenrolmentParams)
    source: str = "<defaults>"

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "<mapping>") -> Params:
        ctx = Ctx(source)
        keys = (
            "name",
            "model",
            "backends",
            "data",
            "bench",
            "store",
            "thresholds",
            "optimize",
            "faces",
            "scale",
            "reenrolment",
        )
        m = parse_mapping(raw, ctx, keys)
        return cls(
            name=parse_str(m.get("name", "run"), ctx.child("name")),
            model=ModelParams.parse(m.get("model"), ctx.child("model")),
            backends=BackendParams.parse(m.get("backends"), ctx.child("backends")),
            data=DataParams.parse(m.get("data"), ctx.child("data")),
            bench=BenchParams.parse(m.get("bench"), ctx.child("bench")),
            store=StoreParams.parse(m.get("store"), ctx.child("store")),
            thresholds=Thresholds.parse(m.get("thresholds"), ctx.child("thresholds")),
            optimize=OptimizeParams.parse(m.get("optimize"), ctx.child("optimize")),
            faces=FacesParams.parse(m.get("faces"), ctx.child("faces")),
            scale=ScaleParams.parse(m.get("scale"), ctx.child("scale")),
            reenrolment=ReenrolmentParams.parse(m.get("reenrolment"), ctx.child("reenrolment")),
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d

    def check_backends(
        self, known: Mapping[str, Callable[[Mapping[str, Any], Ctx], Any] | None]
    ) -> Params:
        """Raise :class:`ParamsError` unless every backend named is in ``known``.

        ``known`` maps each backend name to its options parser (``parse(options, ctx)``:
        :meth:`arcface_lab.engines.base.Engine.parse_options`; None when it cannot be told,
        e.g. a plugin that failed to load), which refuses unknown names and bad values,
        since a typo must not silently become a default. The engines wing supplies
        ``known`` (:func:`arcface_lab.engines.registry.check_params`): the config wing
        never imports the registry, so reading a params file loads no backend.
        """
        ctx = Ctx(self.source).child("backends")
        expected = f"a backend name ({', '.join(sorted(known))})"
        named = [("chain", n) for n in self.backends.chain]
        for key, name in [*named, ("reference", self.backends.reference)]:
            if name not in known:
                raise ctx.child(key).error(expected, name)
        for name, opts in self.backends.options.items():
            if name not in known:
                raise ctx.child("options").error(expected, name)
            parse = known[name]
            if parse is not None:
                parse(opts, ctx.child("options").child(name))
        return self


def default_params_file() -> Path | None:
    """The repository's ``params/default.yaml`` (a source checkout), or None."""
    path = REPO_ROOT / "params" / "default.yaml"
    return path if path.is_file() else None


def _params_path(path: Path) -> Path:
    """``path`` as given; a relative one missing there, under the repository if it is there."""
    if path.is_absolute() or path.exists():
        return path
    beside = REPO_ROOT / path
    return beside if beside.is_file() else path


def load_params(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Params:
    """Read and validate a params YAML file.

    A relative ``path`` is read against the working directory, else against the
    repository the package is in (``params/ci.yaml`` works from any folder).

    ``overrides`` maps dotted keys (``"model.spec"``, ``"bench.batch_sizes"``) to values
    set in the file's mapping before it is validated, as a notebook's parameters do; an
    error then names the file and the keys overridden.
    """
    import yaml

    path = _params_path(Path(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        where = "" if path.is_absolute() else f" (also not under {REPO_ROOT})"
        raise ParamsError(
            f"{path}: cannot read params file ({exc.strerror or exc}){where}"
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ParamsError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raise ParamsError(
            f"{path}: empty params file; expected a mapping with at least model and thresholds "
            "(see params/default.yaml)"
        )
    if not overrides:
        return Params.from_mapping(raw, str(path))
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{path}: expected a mapping at the top, got {type(raw).__name__}")
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            merged[section] = value
            continue
        block = merged.get(section)
        if block is None:
            block = merged[section] = {}
        if not isinstance(block, dict):
            raise Ctx(str(path)).child(section).error("a mapping", block)
        block[key] = value
    return Params.from_mapping(merged, f"{path} (with {', '.join(overrides)} overridden)")
