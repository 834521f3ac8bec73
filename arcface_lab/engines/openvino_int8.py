"""OpenVINO's INT8 half: the gates, calibration faces and pairs, the search, its artifact.

:class:`~arcface_lab.engines.openvino.OpenVinoEngine` calls :func:`int8_model` for the
``int8`` precision: the ONNX model is read, quantized by
:func:`~arcface_lab.engines.int8_search.quantize_int8` under the face-recognition gates
(``int8_cosine_min``, ``int8_flips_max``) and kept in the engine store as an
``openvino-int8`` tar (the IR saved without FP16 compression, and the search report),
keyed by everything that decides the result. The report goes into ``info.details``
(:func:`record_int8`); a model that fails its gates is refused unless
``int8_enforce_gates`` is false.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.core.files import array_sha256, read_tar_members, write_tar
from arcface_lab.engines.int8_search import Gates, SearchMemo, SearchSettings, quantize_int8
from arcface_lab.engines.ov_fp32 import FP32_OPTION
from arcface_lab.errors import BackendUnavailable, EngineError

__all__ = [
    "INT8_RECIPE",
    "calibration_images",
    "gate_pairs",
    "int8_gates",
    "int8_model",
    "read_int8_artifact",
    "record_int8",
    "seconds",
    "write_int8_artifact",
]

log = logging.getLogger(__name__)

#: Part of every INT8 artifact's key: an identifier of the recipe (its old module path is
#: kept so that artifacts built before the wings stay valid), bumped when results change.
INT8_RECIPE = "arcface_lab.quantize.quantize_int8 v3"
_TAR_MEMBERS = ("model.xml", "model.bin", "report.json")


def seconds(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)


def read_int8_artifact(path: Path) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(xml, weights, report)`` from an ``openvino-int8`` tar; only its three members are read."""
    data = read_tar_members(path, _TAR_MEMBERS, "openvino int8")
    try:
        report = json.loads(data["report.json"])
    except ValueError as exc:
        raise EngineError(f"openvino int8: {path}: not a readable INT8 artifact ({exc})") from None
    return data["model.xml"], data["model.bin"], report


def write_int8_artifact(model: Any, report: dict[str, Any], dest: Path) -> None:
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        blob = json.dumps(report, indent=1, default=str).encode()
        write_tar(
            dest, {"model.xml": xml, "model.bin": xml.with_suffix(".bin"), "report.json": blob}
        )


def int8_gates(engine: Any) -> Gates:
    cosine_min, flips_max = engine.opts.int8_cosine_min, engine.opts.int8_flips_max
    if cosine_min is None or flips_max is None:
        raise BackendUnavailable(
            "openvino int8: no accuracy gates given; pass the options int8_cosine_min and "
            "int8_flips_max (params: thresholds.cosine_min.int8, thresholds.decision_flips_max)"
        )
    return Gates(float(cosine_min), flips_max)


def calibration_images(engine: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from arcface_lab.core.preprocess import check_images
    from arcface_lab.data.images import RUN_IMAGE_SEED, images_from_spec

    spec = engine.opts.calibration
    size = engine.model.preprocess.size
    if isinstance(spec, np.ndarray):
        check_images(spec, size, source="openvino calibration")
        return spec, {"array_sha256": array_sha256(spec)}
    text = str(spec)
    images, kind = images_from_spec(text, size, RUN_IMAGE_SEED)
    if kind == "synthetic":  # same spec, same images: the spec identifies them
        return images, {"spec": f"synthetic:{len(images)}", "seed": RUN_IMAGE_SEED}
    return images, {"spec": text, "sha256": array_sha256(images)}


def gate_pairs(engine: Any) -> tuple[Any, dict[str, Any] | None]:
    from arcface_lab.data.pairs import load_pairs

    spec = engine.opts.pairs
    if spec is None:
        return None, None
    pairs = load_pairs(spec, engine.model.preprocess.size)
    digest = array_sha256(pairs.images_a, pairs.images_b, pairs.same)
    return pairs, {"spec": str(spec), "sha256": digest}


# -- building ------------------------------------------------------------------------


def int8_model(
    engine: Any, core: Any, config: dict[str, Any], fp32: str | list[str], times: dict[str, float]
) -> tuple[str, Callable[[], Any]]:
    """The quantized model through the store: its sha256 and a reader."""
    import openvino as ov

    from arcface_lab.core.files import file_sha256
    from arcface_lab.core.host import probe
    from arcface_lab.store import device_fingerprint

    if importlib.util.find_spec("nncf") is None:
        raise BackendUnavailable("openvino int8 needs nncf: pip install nncf")
    nncf = importlib.import_module("nncf")  # untyped: used through Any

    gates = int8_gates(engine)
    images, images_id = calibration_images(engine)
    pairs, pairs_id = gate_pairs(engine)
    flip, search, margin = engine.opts.flip, engine.opts.int8_search, engine.opts.int8_margin
    overflow_fix = "disable" if probe().cpu.vnni else "first_layer_only"
    onnx = engine.model.onnx_path()
    settings = SearchSettings(
        search=search,
        margin=float(margin),
        batch_size=engine.batch_size,
        overflow_fix=overflow_fix,
    )
    # What the calibration depends on; the measurements add the pairs and the runtime.
    calibration = {
        "onnx_sha256": file_sha256(onnx),
        "recipe": INT8_RECIPE,
        "calibration": images_id,
        "fp32_layers": fp32,
        "overflow_fix": overflow_fix,
        "library": {"openvino": ov.get_version(), "nncf": nncf.__version__},
        "device": device_fingerprint(),
    }
    measurements = {
        **calibration,
        "pairs": pairs_id,
        "flip": flip,
        "inference_precision": config["INFERENCE_PRECISION_HINT"],
        "batch_size": settings.batch_size,
        "ranking_size": settings.ranking_size,
    }

    def build(tmp: Path) -> dict[str, Any]:
        from arcface_lab.engines.ov_fp32 import resolve_fp32_layers

        t0 = time.perf_counter()
        original = core.read_model(str(onnx))
        fp32_names = resolve_fp32_layers(original, fp32, FP32_OPTION)
        times["build_s"] += seconds(t0)
        t0 = time.perf_counter()
        result = quantize_int8(
            original,
            images,
            engine.model.preprocess,
            gates,
            config,
            pairs=pairs,
            flip=flip,
            settings=settings,
            fp32_layers=fp32_names,
            core=core,
            memo=StoreMemo(engine, core, calibration, measurements),
        )
        spent = result.report["timings"]
        times["calibration_s"] = round(spent["calibration_s"], 4)
        times["search_s"] = round(seconds(t0) - spent["calibration_s"], 4)
        write_int8_artifact(result.model, result.report, tmp)
        return {"passed": result.passed, "timings": result.report["timings"]}

    inputs = {
        **calibration,
        "precision": "int8",
        "gates": gates.to_dict(),
        "pairs": pairs_id,
        "flip": flip,
        "search": search,
        "margin": float(margin),
        "inference_precision": config["INFERENCE_PRECISION_HINT"],
    }
    path = engine._artifact("openvino-int8", inputs, build, main=False)
    xml, weights, report = read_int8_artifact(path)
    record_int8(engine, report)
    sha = engine.info.details["artifacts"][-1]["sha256"]
    return sha, lambda: core.read_model(xml, weights)


class StoreMemo(SearchMemo):
    """The INT8 search's gate-free steps kept in the engine's store.

    ``openvino-int8-calibration``: the calibrated model (a tar of its IR), keyed by
    ``calibration`` (the ONNX's sha256, the calibration faces' fingerprint, the recipe,
    FP32 islands, overflow fix, library versions, device). ``openvino-int8-measure``: the
    two ends' gate metrics and per-face damage, and the per-quantizer sensitivity (JSON),
    keyed by ``measurements`` (that, and the pairs, flip, inference precision and ranking
    settings), the calibrated model's sha256 and what the measurement was made on (the
    sensitivity: its faces and the float-only damage). Each is verified by sha256 before it
    is read, like every artifact; JSON is parsed, never unpickled.
    """

    def __init__(
        self,
        engine: Any,
        core: Any,
        calibration: dict[str, Any],
        measurements: dict[str, Any],
    ) -> None:
        self.engine, self.core = engine, core
        self.calibration, self.measurements = calibration, measurements
        self.calibrated_sha256 = ""

    def calibrated(self, make: Callable[[], Any]) -> tuple[Any, bool]:
        def build(tmp: Path) -> None:
            write_int8_artifact(make(), {"calibration": self.calibration}, tmp)

        path = self.engine._artifact(
            "openvino-int8-calibration", self.calibration, build, main=False
        )
        reused = self._reused()
        self.calibrated_sha256 = self.engine.info.details["artifacts"][-1]["sha256"]
        xml, weights, _ = read_int8_artifact(path)  # the same IR whether built now or not
        return self.core.read_model(xml, weights), reused

    def measured(
        self, name: str, make: Callable[[], dict[str, Any]], on: Any = None
    ) -> tuple[dict[str, Any], bool]:
        def build(tmp: Path) -> None:
            tmp.write_bytes(json.dumps(make()).encode())

        # of this calibrated model (a rebuilt calibration is measured again) and of ``on``
        inputs = {
            **self.measurements,
            "calibrated_sha256": self.calibrated_sha256,
            "measure": name,
            "on": on,
        }
        path = self.engine._artifact("openvino-int8-measure", inputs, build, main=False)
        try:
            value = json.loads(path.read_bytes())
        except ValueError as exc:
            raise EngineError(
                f"openvino int8: {path}: not a readable measurement ({exc})"
            ) from None
        if not isinstance(value, dict):
            raise EngineError(f"openvino int8: {path}: expected a JSON object")
        return value, self._reused()

    def _reused(self) -> bool:
        return bool(self.engine.info.details["artifacts"][-1]["origin"] != "built")


def record_int8(engine: Any, report: dict[str, Any]) -> None:
    result = report.get("result", {})
    engine.info.details["int8"] = {
        "passed": report.get("passed"),
        "search": report.get("search", True),
        "gates": report.get("gates"),
        "result": result,
        "int8_layers": len(report.get("int8_layers", [])),
        "int8_layer_names": report.get("int8_layers", []),
        "kept_float_layers": report.get("kept_float_layers", []),
        "fp32_layers": report.get("fp32_layers", []),
        "overflow_fix": report.get("overflow_fix"),
        "most_sensitive": report.get("most_sensitive", [])[:5],
        "int8_macs_fraction": report.get("int8_macs_fraction"),
        "quantizers": report.get("quantizers"),
        "quantizers_kept": report.get("quantizers_kept"),
        "full_int8": report.get("full_int8"),
        "float_only": report.get("float_only"),
        "rounds": report.get("rounds"),
        "timings": report.get("timings"),
        "reused": report.get("reused", []),
        "failure": report.get("failure"),
    }
    if report.get("passed"):
        return
    msg = (
        f"openvino int8 fails its gates ({report.get('failure', 'gates not met')}): cosine min "
        f"{result.get('cosine_min')} (gate {report['gates']['cosine_min']}), decision flips "
        f"{result.get('decision_flips')} (gate {report['gates']['decision_flips_max']})"
    )
    if engine.opts.int8_enforce_gates:
        raise BackendUnavailable(f"{msg}; not offered (int8_enforce_gates: false measures it)")
    log.warning("%s; loaded because int8_enforce_gates is false", msg)
    engine.info.warnings.append(msg)
