"""INT8 that keeps the model: static quantization plus an accuracy-aware precision search.

The model is quantized once with NNCF (``nncf.quantize``, calibrated on the
validation images), then the quantizers whose INT8 error hurts the embedding
most are removed, so the layers behind them run in the engine's floating-point
precision (BF16 on a CPU with native BF16), until the gates hold:

0. **FP32 islands** (``fp32_layers``, by default the stem convolution that reads
   the image): marked to keep FP32 under the BF16 hint and never quantized. The
   image rounded to BF16 costs seeded r50's worst face 0.0003 of cosine, a
   third of a 0.999 budget, for 0.3 % of the multiply-accumulates; keeping it
   leaves that headroom to INT8 (see :mod:`arcface_lab.engines.ov_fp32`).
1. **Calibrate**: ``nncf.quantize`` inserts a ``FakeQuantize`` in front of every
   quantizable activation; OpenVINO runs a convolution or matmul in INT8 when
   its input comes through one. Bias correction is switched off so that
   removing a quantizer (and restoring the layer's FP32 weights) gives back
   exactly the original operation. On a CPU with VNNI the overflow fix is off,
   so weights keep all 8 bits.
2. **Measure sensitivity** against the reference, in the configuration the
   engine will run (same inference-precision hint): every quantizer alone,
   all others removed, on the ranking subset (the faces the fully quantized
   model hurts most). Its damage is the per-face ``1 - cos`` it adds to the
   BF16-only model.
3. **Select**: quantizers ordered by damage per multiply-accumulate they make
   INT8; kept while the predicted worst face (BF16-only damage plus the sum of
   the kept quantizers' damages; errors this small add to first order) stays
   within the BF16-only damage plus ``margin`` of the headroom left under
   ``1 - cosine_min``.
4. **Verify** on every validation image and pair: per-face cosine min and
   verification decision flips against the reference's decisions. On failure
   the budget shrinks and step 3 repeats (optionally, after a pass, it grows
   while verification still passes).

NNCF's ``quantize_with_accuracy_control`` implements the same idea, but it
validates every candidate with the FP32 inference hint (its OpenVINO prepared
model forces ``f32``), while this engine runs the kept layers in BF16, whose
own error is most of a 0.999 cosine budget; and on seeded r50 with two cores it
had not finished after 20 minutes. Steps 2-4 are therefore written here, with
NNCF doing the calibration.

Steps 1 and 2, and the gate metrics of the two ends (every quantizer kept, none), do
not depend on the gates: a :class:`SearchMemo` keeps them (the engine store, in
:mod:`arcface_lab.engines.openvino_int8`), so a search under other gates, or after the
``int8_search: false`` candidate of the same run, repeats only steps 3 and 4.

Thresholds are never defaulted here: callers pass :class:`Gates` from params
(``thresholds.cosine_min.int8`` and ``thresholds.decision_flips_max``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from arcface_lab.core.metrics import compare_verification, flip_sum, l2_normalize, mirror
from arcface_lab.core.progress import report_phase
from arcface_lab.data.pairs import PairSet
from arcface_lab.engines.ov_fp32 import WEIGHTED_OPS, activation_source, keep_fp32, layer_macs
from arcface_lab.errors import EngineError, InputError

__all__ = ["Gates", "Int8Search", "SearchMemo", "SearchSettings", "quantize_int8"]

log = logging.getLogger(__name__)

#: NNCF's weight-range reduction against INT16 overflow of ``vpmaddubsw`` (CPUs without VNNI).
OVERFLOW_FIX = ("first_layer_only", "enable", "disable")


@dataclass(frozen=True)
class Gates:
    """What an INT8 model must keep: per-face cosine and verification decisions.

    Args:
        cosine_min: smallest per-face cosine to the reference allowed.
        decision_flips_max: most verification pairs judged differently from the reference.
    """

    cosine_min: float
    decision_flips_max: int

    def __post_init__(self) -> None:
        if not 0.0 < float(self.cosine_min) <= 1.0:
            raise InputError(f"int8 gates: cosine_min: expected (0, 1], got {self.cosine_min!r}")
        flips = self.decision_flips_max
        if isinstance(flips, bool) or not isinstance(flips, int) or flips < 0:
            raise InputError(
                f"int8 gates: decision_flips_max: expected an integer >= 0, got {flips!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Int8Search:
    """Result of :func:`quantize_int8`: the model to compile and the report to keep with it."""

    model: Any  # openvino.Model
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


# --------------------------------------------------------------------------- graph helpers


def _activation_quantizer(op: Any) -> Any | None:
    """The FakeQuantize feeding ``op``'s activation input (through reshapes), if any."""
    node = activation_source(op)
    return node if node.get_type_name() == "FakeQuantize" else None


class _Graph:
    """The quantized model, its quantizers and the FP32 weights to restore."""

    def __init__(self, original: Any, quantized: Any) -> None:
        self.quantized = quantized
        self.weights = {
            op.get_friendly_name(): op.input_value(1)
            for op in original.get_ordered_ops()
            if op.get_type_name() in WEIGHTED_OPS
        }
        self.quantizers = [
            op.get_friendly_name()
            for op in quantized.get_ordered_ops()
            if op.get_type_name() == "FakeQuantize"
            and op.input_value(0).get_node().get_type_name() != "Constant"
        ]
        self.layers: dict[str, list[str]] = {q: [] for q in self.quantizers}
        self.layer_macs: dict[str, int] = {}
        for op in quantized.get_ordered_ops():
            if op.get_type_name() not in WEIGHTED_OPS:
                continue
            name = op.get_friendly_name()
            self.layer_macs[name] = layer_macs(op)
            fq = _activation_quantizer(op)
            if fq is not None and fq.get_friendly_name() in self.layers:
                self.layers[fq.get_friendly_name()].append(name)
        self.unit_macs = {
            q: sum(self.layer_macs[n] for n in names) for q, names in self.layers.items()
        }

    def keep_only(self, keep: Iterable[str]) -> Any:
        """A copy with every activation quantizer not in ``keep`` removed.

        A weighted op left without a quantized input gets its FP32 weights back, so it
        is the original operation, run in the engine's floating-point precision.
        """
        keep = set(keep)
        model = self.quantized.clone()
        for op in model.get_ordered_ops():
            name = op.get_friendly_name()
            if op.get_type_name() == "FakeQuantize" and name in self.layers and name not in keep:
                op.output(0).replace(op.input_value(0))
        for op in model.get_ordered_ops():
            if op.get_type_name() in WEIGHTED_OPS and _activation_quantizer(op) is None:
                original = self.weights.get(op.get_friendly_name())
                if original is not None:
                    op.input(1).replace_source_output(original)
        return model

    def int8_layers(self, keep: Iterable[str]) -> list[str]:
        keep = set(keep)
        return [n for q in self.quantizers if q in keep for n in self.layers[q]]


# --------------------------------------------------------------------------- evaluation


class _Evaluator:
    """Per-face damage and gate metrics of a candidate model, against the FP32 reference."""

    def __init__(
        self,
        core: Any,
        config: Mapping[str, Any],
        reference_model: Any,
        images: np.ndarray,
        preprocess: Callable[[np.ndarray], np.ndarray],
        pairs: PairSet | None,
        flip: bool,
        batch_size: int,
    ) -> None:
        self.core, self.config, self.batch_size = core, dict(config), batch_size
        self.flip, self.evaluations = flip, 0
        self.last_damage = np.zeros(0, dtype=np.float32)
        self.x = preprocess(images)
        self.pair_inputs: list[np.ndarray] = []
        if pairs is not None:
            views = [pairs.images_a, pairs.images_b]
            if flip:
                views += [mirror(pairs.images_a), mirror(pairs.images_b)]
            self.pair_inputs = [preprocess(v) for v in views]
        self.same = pairs.same if pairs is not None else np.zeros(0, dtype=bool)
        self._reference_model = reference_model
        self._reference: tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None] | None = None

    def _references(self) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """The FP32 model's embeddings of the faces and pairs, made on first use: a search
        whose measurements all come from the store never compiles the reference."""
        if self._reference is None:
            config = {**self.config, "INFERENCE_PRECISION_HINT": "f32"}
            compiled = self.core.compile_model(self._reference_model, "CPU", config)
            request = compiled.create_infer_request()
            self._reference = self._run(request, self.x), self._pairs(request)
        return self._reference

    @property
    def reference(self) -> np.ndarray:
        return self._references()[0]

    @property
    def ref_pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._references()[1]

    def _run(self, request: Any, x: np.ndarray) -> np.ndarray:
        out = [
            np.array(request.infer({0: x[i : i + self.batch_size]})[0], dtype=np.float32)
            for i in range(0, len(x), self.batch_size)
        ]
        return l2_normalize(np.concatenate(out))

    def _pairs(self, request: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if not self.pair_inputs:
            return None
        emb = [self._run(request, v) for v in self.pair_inputs]
        if self.flip:
            return flip_sum(emb[0], emb[2]), flip_sum(emb[1], emb[3])
        return emb[0], emb[1]

    def _request(self, model: Any) -> Any:
        self.evaluations += 1
        return self.core.compile_model(model, "CPU", self.config).create_infer_request()

    def damage(self, model: Any, subset: np.ndarray | None = None) -> np.ndarray:
        """Per-face ``1 - cos`` to the reference (on ``subset`` indices when given)."""
        x = self.x if subset is None else self.x[subset]
        ref = self.reference if subset is None else self.reference[subset]
        emb = self._run(self._request(model), x)
        damage: np.ndarray = 1.0 - np.sum(emb * ref, axis=1)
        return damage

    def gates(self, model: Any, gates: Gates) -> dict[str, Any]:
        """Cosine min/mean on every image and decision flips on every pair, with verdicts."""
        request = self._request(model)
        cos = np.sum(self._run(request, self.x) * self.reference, axis=1)
        self.last_damage = 1.0 - cos
        result: dict[str, Any] = {
            "cosine_min": float(cos.min()),
            "cosine_mean": float(cos.mean()),
            "images": len(cos),
        }
        passed = result["cosine_min"] >= gates.cosine_min
        pairs = self._pairs(request)
        if pairs is not None and self.ref_pairs is not None:
            ver = compare_verification(*self.ref_pairs, *pairs, self.same)
            result.update(
                decision_flips=ver["decision_flips"],
                accuracy_delta=ver["accuracy_delta"],
                pairs=len(pairs[0]),
            )
            passed = passed and ver["decision_flips"] <= gates.decision_flips_max
        result["passed"] = bool(passed)
        return result


def passes(result: Mapping[str, Any], gates: Gates) -> bool:
    """Whether measured gate metrics (:meth:`_Evaluator.gates`) meet ``gates``."""
    flips = result.get("decision_flips")
    ok = result["cosine_min"] >= gates.cosine_min
    return bool(ok and (flips is None or flips <= gates.decision_flips_max))


class SearchMemo:
    """Where the search keeps what it measures that no gate decides, for the next search.

    The calibrated model, the two ends (every quantizer kept, none) and the per-quantizer
    sensitivity depend on the model, the faces, the pairs and the runtime, never on the
    gates or the margin: a search under other gates (or the same model's
    ``int8_search: false`` candidate, which calibrates and measures the ends too) can
    reuse them. This base keeps nothing; :mod:`arcface_lab.engines.openvino_int8` keeps
    them in the engine store, verified by sha256 like every artifact.
    """

    def calibrated(self, make: Callable[[], Any]) -> tuple[Any, bool]:
        """The quantized model ``make()`` gives, and whether it was reused."""
        return make(), False

    def measured(
        self, name: str, make: Callable[[], dict[str, Any]], on: Any = None
    ) -> tuple[dict[str, Any], bool]:
        """The JSON-able measurement ``name`` that ``make()`` gives, and whether it was reused.

        ``on``: what else it depends on (JSON-able, part of where it is kept), beyond the
        calibrated model and the faces.
        """
        return make(), False


# --------------------------------------------------------------------------- the search


def _select(
    order: Sequence[str], excess: Mapping[str, np.ndarray], base: np.ndarray, budget: float
) -> tuple[list[str], float]:
    keep: list[str] = []
    acc = base.copy()
    for name in order:
        trial = acc + excess[name]
        if float(trial.max()) <= budget:
            keep.append(name)
            acc = trial
    return keep, float(acc.max())


@dataclass(frozen=True)
class SearchSettings:
    """How the INT8 search spends its headroom (the defaults are what the engine uses).

    Args:
        search: False skips the sensitivity and selection steps: every quantizer stays and
            the gates are only measured (the speed INT8 could have, and what it costs).
        margin: fraction of the headroom (``1 - cosine_min`` minus the float-only model's
            worst damage) the selection may predict to spend on INT8 error.
        shrink: factor on that fraction after a failed verification.
        max_rounds: failed verifications before giving up.
        grow_rounds: after a selection passes, times the budget grows (by half of the
            headroom fraction left) to try a larger selection; the last one that passes
            verification is kept. Off by default: on seeded r50, spending 80% of the
            headroom passed on the validation faces (0.99905) and missed 0.999 on
            held-out faces (0.99893); the unspent headroom is the margin for faces the
            search never saw.
        ranking_size: faces used to measure each quantizer's damage.
        batch_size: faces per inference request while measuring.
        overflow_fix: NNCF's overflow fix, one of :data:`OVERFLOW_FIX`. It quantizes
            weights to 7 bits so that CPUs without VNNI cannot overflow; on a CPU with
            VNNI ``"disable"`` keeps all 8 bits (seeded r50, stem in FP32: full-INT8
            cosine min 0.9707 -> 0.9727).
    """

    search: bool = True
    margin: float = 0.3
    shrink: float = 0.6
    max_rounds: int = 4
    grow_rounds: int = 0
    ranking_size: int = 16
    batch_size: int = 32
    overflow_fix: str = "first_layer_only"

    def __post_init__(self) -> None:
        if not 0 < self.margin <= 1 or not 0 < self.shrink < 1:
            raise InputError(
                "int8 search: expected 0 < margin <= 1 and 0 < shrink < 1, "
                f"got {self.margin}, {self.shrink}"
            )
        if self.max_rounds < 1 or self.ranking_size < 1 or self.grow_rounds < 0:
            raise InputError(
                "int8 search: expected max_rounds >= 1, ranking_size >= 1, grow_rounds >= 0; "
                f"got {self.max_rounds}, {self.ranking_size}, {self.grow_rounds}"
            )
        if self.overflow_fix not in OVERFLOW_FIX:
            raise InputError(
                f"int8 search: overflow_fix: expected one of {', '.join(OVERFLOW_FIX)}, "
                f"got {self.overflow_fix!r}"
            )


def _calibrate(
    model: Any, x: np.ndarray, fp32_layers: list[str], overflow_fix: str
) -> tuple[Any, float]:
    """Every quantizer NNCF places, calibrated on ``x``; and the seconds it took."""
    nncf = importlib.import_module("nncf")  # untyped: used through Any
    advanced = importlib.import_module("nncf.quantization.advanced_parameters")

    calibration = nncf.Dataset([x[i : i + 1] for i in range(len(x))])
    t0 = time.perf_counter()
    quantized = nncf.quantize(
        model,
        calibration,
        subset_size=len(x),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=nncf.IgnoredScope(names=fp32_layers) if fp32_layers else None,
        advanced_parameters=advanced.AdvancedQuantizationParameters(
            disable_bias_correction=True, overflow_fix=advanced.OverflowFix(overflow_fix)
        ),
    )
    return quantized, time.perf_counter() - t0


@dataclass
class _Baselines:
    """The two ends: every quantizer kept, and none (the float-only model)."""

    full: dict[str, Any]
    d_full: np.ndarray
    float_only: dict[str, Any]
    d_base: np.ndarray


def _baselines(
    evaluator: _Evaluator, graph: _Graph, quantized: Any, gates: Gates, memo: SearchMemo
) -> tuple[_Baselines, bool]:
    """Both ends, measured or from ``memo``; whether each passes is judged by ``gates``."""

    def measure() -> dict[str, Any]:
        report_phase("int8: gates of the all-INT8 and the float-only models")
        full = evaluator.gates(quantized, gates)
        d_full = evaluator.last_damage
        base = evaluator.gates(graph.keep_only(()), gates)
        return {
            "full": full,
            "d_full": d_full.tolist(),
            "float_only": base,
            "d_base": evaluator.last_damage.tolist(),
        }

    ends, reused = memo.measured("ends", measure)
    full = {**ends["full"], "passed": passes(ends["full"], gates)}
    base = {**ends["float_only"], "passed": passes(ends["float_only"], gates)}
    d_full = np.asarray(ends["d_full"], dtype=np.float32)
    return _Baselines(full, d_full, base, np.asarray(ends["d_base"], dtype=np.float32)), reused


def _sensitivity(
    evaluator: _Evaluator, graph: _Graph, subset: np.ndarray, base: np.ndarray, memo: SearchMemo
) -> tuple[dict[str, np.ndarray], dict[str, float], bool]:
    """Per quantizer alone: its damage above the float-only model's, per face and mean
    (measured, or from ``memo``); and whether it was reused."""

    def measure() -> dict[str, Any]:
        excess: dict[str, list[float]] = {}
        weighted = [name for name in graph.quantizers if graph.unit_macs[name] > 0]
        for i, name in enumerate(weighted):  # one quantizing no weighted op only adds error
            report_phase(f"int8 sensitivity: quantizer {i + 1} of {len(weighted)} alone")
            damage = evaluator.damage(graph.keep_only((name,)), subset)
            excess[name] = np.maximum(damage - base, 0.0).tolist()
        return {"subset": subset.tolist(), "excess": excess}

    on = {"subset": subset.tolist(), "base": base.tolist()}
    measured, reused = memo.measured("sensitivity", measure, on)
    if measured["subset"] != on["subset"] or not set(measured["excess"]) <= set(graph.layers):
        raise EngineError("int8 search: the stored sensitivity is not of this model's faces")
    excess = {k: np.asarray(v, dtype=np.float32) for k, v in measured["excess"].items()}
    return excess, {k: float(v.mean()) for k, v in excess.items()}, reused


@dataclass
class _Choice:
    """What the selection kept and the gates it passed (``result`` None: nothing passed)."""

    quantizers: list[str]
    result: dict[str, Any] | None
    model: Any


def _search(
    evaluator: _Evaluator,
    graph: _Graph,
    gates: Gates,
    ends: _Baselines,
    settings: SearchSettings,
    start: _Choice,
    report: dict[str, Any],
    memo: SearchMemo,
) -> tuple[_Choice, dict[str, float]]:
    """Rank the quantizers by damage per MAC and keep the cheapest under a growing budget.

    Each selection is verified on the gates; a failed one shrinks the budget
    (``settings.shrink``), a passing one may grow it (``settings.grow_rounds``).
    """
    k = settings.ranking_size
    worst = np.concatenate(
        [
            np.argsort(-ends.d_full, kind="stable")[:k],
            np.argsort(-ends.d_base, kind="stable")[: max(1, k // 4)],
        ]
    )
    subset = np.unique(worst)
    base = ends.d_base[subset]
    headroom = (1.0 - gates.cosine_min) - float(base.max())
    t1 = time.perf_counter()
    excess, sensitivity, reused = _sensitivity(evaluator, graph, subset, base, memo)
    report["timings_sensitivity_s"] = time.perf_counter() - t1
    if reused:
        report["reused"].append("sensitivity")
    order = sorted(excess, key=lambda n: sensitivity[n] / graph.unit_macs[n])
    choice, fraction = start, settings.margin
    failures, grows = 0, 0
    while failures < settings.max_rounds:
        budget = float(base.max()) + fraction * headroom
        keep, predicted = _select(order, excess, base, budget)
        if choice.result is not None and len(keep) <= len(choice.quantizers):
            break  # a larger budget selects nothing more
        round_: dict[str, Any] = {
            "phase": "grow" if choice.result is not None else "select",
            "budget": budget,
            "predicted_damage_max": predicted,
            "quantizers_kept": len(keep),
        }
        report["rounds"].append(round_)
        if not keep:
            round_["passed"] = False
            break
        candidate = graph.keep_only(keep)
        report_phase(
            f"int8 search: round {len(report['rounds'])}, {len(keep)} of "
            f"{len(graph.quantizers)} quantizers in INT8, checking the gates"
        )
        result = evaluator.gates(candidate, gates)
        round_.update(result)
        log.info("int8 search: %d quantizers, %s", len(keep), result)
        if result["passed"]:
            choice = _Choice(keep, result, candidate)
            if grows >= settings.grow_rounds:
                break
            grows += 1
            fraction = 1.0 - (1.0 - fraction) / 2  # spend half of what is left
        elif choice.result is not None:
            break  # the last passing selection stands
        else:
            failures += 1
            fraction *= settings.shrink
    return choice, sensitivity


def _summary(
    graph: _Graph,
    ends: _Baselines,
    choice: _Choice,
    sensitivity: dict[str, float],
    fp32_layers: list[str],
    search: bool,
    report: dict[str, Any],
) -> None:
    """What the report says of the result: gates, INT8 layers and MACs, the sensitive ones."""
    passed = choice.result is not None
    int8 = graph.int8_layers(choice.quantizers if passed else graph.quantizers)
    kept = [n for n in graph.layer_macs if n not in set(int8) and n not in set(fp32_layers)]
    total_macs = sum(graph.layer_macs.values()) or 1
    ranked = sorted(sensitivity, key=lambda n: -sensitivity[n])
    report.update(
        passed=passed,
        result=choice.result if passed else ends.full,
        int8_layers=int8,
        kept_float_layers=kept,
        int8_macs_fraction=sum(graph.layer_macs[n] for n in int8) / total_macs,
        quantizers_kept=len(choice.quantizers) if passed else len(graph.quantizers),
        most_sensitive=[
            {"quantizer": n, "damage_mean": sensitivity[n], "layers": graph.layers[n]}
            for n in ranked[:10]
        ],
    )
    if not passed:
        why = (
            "even the model without any INT8 layer fails the gates"
            if not ends.float_only["passed"]
            else f"no selection passed in {len(report['rounds'])} verification(s)"
        )
        report["failure"] = why if search else "search off: every quantizer kept"


def quantize_int8(
    model: Any,
    images: np.ndarray,
    preprocess: Callable[[np.ndarray], np.ndarray],
    gates: Gates,
    runtime_config: Mapping[str, Any],
    *,
    pairs: PairSet | None = None,
    flip: bool = False,
    settings: SearchSettings | None = None,
    fp32_layers: Sequence[str] = (),
    core: Any = None,
    memo: SearchMemo | None = None,
) -> Int8Search:
    """Quantize an OpenVINO FP32 ``model`` to INT8, keeping the layers the gates need.

    Args:
        model: the FP32 ``openvino.Model`` (dynamic batch).
        images: ``uint8 (N, H, W, 3)`` validation faces; they calibrate the quantizers
            and are the faces the cosine gate is measured on.
        preprocess: turns face crops into the model's input tensor.
        gates: the thresholds (from params) the result must meet.
        runtime_config: the OpenVINO CPU properties the engine compiles with; every
            candidate is measured with them, so kept layers are measured as they run.
        pairs: verification pairs for the decision-flip gate (none: not checked).
        flip: use flip test-time augmentation for the pairs, as the run does.
        settings: how the search spends its headroom (:class:`SearchSettings`).
        fp32_layers: weighted layers that run in FP32 whatever the hint (FP32 islands,
            see :mod:`arcface_lab.engines.ov_fp32`); never quantized.
        core: an ``openvino.Core`` to reuse.
        memo: where the calibration and the gate-free measurements are kept and found
            (:class:`SearchMemo`; default: nowhere, everything is measured).

    Returns:
        The selected model (or, when no selection passes, the fully quantized model,
        with ``report["passed"]`` false) and a JSON-able report: gates, which layers
        run in INT8 and which stayed in floating point, the search rounds, timings.
    """
    import openvino as ov

    nncf = importlib.import_module("nncf")  # untyped: used through Any
    settings = settings or SearchSettings()
    memo = memo or SearchMemo()
    core = core or ov.Core()
    started = time.perf_counter()
    fp32_layers = list(fp32_layers)
    model = keep_fp32(model, fp32_layers, core)
    evaluator = _Evaluator(
        core, runtime_config, model, images, preprocess, pairs, flip, settings.batch_size
    )
    x = evaluator.x
    t0 = time.perf_counter()

    def calibrate() -> Any:
        report_phase(f"int8 calibration on {len(x)} faces")
        return _calibrate(model, x, fp32_layers, settings.overflow_fix)[0]

    quantized, calibration_reused = memo.calibrated(calibrate)
    calibration_s = time.perf_counter() - t0
    graph = _Graph(model, quantized)
    report: dict[str, Any] = {
        "method": "nncf.quantize (default ranges, per-channel weights, no bias correction) + "
        "per-quantizer sensitivity search in the runtime configuration",
        "overflow_fix": settings.overflow_fix,
        "fp32_layers": fp32_layers,
        "versions": {"nncf": nncf.__version__, "openvino": ov.get_version()},
        "gates": gates.to_dict(),
        "calibration": {"images": len(x), "subset_size": len(x)},
        "runtime": {k: str(v) for k, v in runtime_config.items()},
        "flip": flip,
        "search": settings.search,
        "quantizers": len(graph.quantizers),
        "rounds": [],
        "reused": ["calibration"] if calibration_reused else [],
    }

    t0 = time.perf_counter()
    ends, ends_reused = _baselines(evaluator, graph, quantized, gates, memo)
    if ends_reused:
        report["reused"].append("ends")
    report["full_int8"] = ends.full
    report["float_only"] = ends.float_only
    sensitivity: dict[str, float] = {}
    if ends.full["passed"]:
        choice = _Choice(list(graph.quantizers), ends.full, quantized)
    else:
        choice = _Choice([], None, quantized)
        if settings.search and ends.float_only["passed"]:
            choice, sensitivity = _search(
                evaluator, graph, gates, ends, settings, choice, report, memo
            )
    search_s = time.perf_counter() - t0

    _summary(graph, ends, choice, sensitivity, fp32_layers, settings.search, report)
    report.update(
        evaluations=evaluator.evaluations,
        timings={
            "calibration_s": calibration_s,
            "search_s": search_s,
            "total_s": time.perf_counter() - started,
        },
    )
    return Int8Search(model=choice.model, report=report)
