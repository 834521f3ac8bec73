"""Golden checks of a team's own model: record its embeddings once, check them after every upgrade.

A *golden folder* is what a team keeps beside its model: the faces, the embeddings one
engine gave them, the labels when there are any, and ``golden.json`` saying what made
them (the model's sha256, the engine and its artifact, the library versions, the
hardware class) and the sha256 of every file. :func:`record_golden` writes one, whole
or not at all; :func:`check_golden` embeds the same faces with the engine at hand and
judges the result with the face gates:

* per-face cosine against the recorded embeddings, at least ``thresholds.cosine_min``
  of the engine's precision (the worst face named);
* with labels, the decisions that flip at the recorded embeddings' own thresholds at
  the operating FARs of ``reenrolment.fars`` (at most ``thresholds.decision_flips_max``),
  and the re-enrolment verdict (:func:`arcface_lab.measure.acceptance.reenrolment`): a
  gallery enrolled from the recorded embeddings, probes from today's engine.

Whatever the outcome, the check says what changed since the recording (library
versions, hardware class, model, engine and artifact), so a failure points at its
cause. Every file is verified against its recorded sha256 before it is read
(:class:`~arcface_lab.errors.GoldenIntegrityError`); arrays are read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from arcface_lab.config.params import ReenrolmentParams, Thresholds
from arcface_lab.core.files import file_sha256, fsync_dir
from arcface_lab.errors import GoldenIntegrityError, InputError

__all__ = ["GOLDEN_FILE", "GOLDEN_FORMAT", "check_golden", "read_golden", "record_golden"]

#: The record of a golden folder; beside it ``faces.npy``, ``embeddings.npy`` and
#: ``labels.npy`` (when labels were given).
GOLDEN_FILE = "golden.json"
GOLDEN_FORMAT = 1


def _describe(engine: Any, model: Any) -> dict[str, Any]:
    """What made the embeddings: model, engine, artifact, libraries, hardware class."""
    from arcface_lab.core.host import probe

    info = engine.info.to_dict()
    artifact = info.get("artifact") or {}
    host = probe()
    return {
        "model": {"spec": model.spec, "sha256": model.sha256()},
        "engine": {
            "backend": info["backend"],
            "precision": info["precision"],
            "device": info["device"],
            "artifact": {k: artifact.get(k) for k in ("key", "sha256") if artifact.get(k)},
        },
        "versions": dict(host.versions),
        "hardware_class": host.cls,
    }


def record_golden(
    out: str | Path,
    engine: Any,
    model: Any,
    faces: np.ndarray,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> Path:
    """Embed ``faces`` with ``engine`` and write the golden folder ``out`` (see the module
    docstring); return its path.

    The folder is built beside ``out`` and renamed into place when complete, so a reader
    never sees half of one.

    Raises:
        InputError: ``out`` exists and is not empty (a golden is never written over), or
            ``labels`` are not one per face.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not empty; a golden is never written over")
    faces = np.asarray(faces)
    if labels is not None and len(labels) != len(faces):
        raise InputError(f"labels: {len(labels)} for {len(faces)} faces (one per face)")
    embeddings = engine.embed(faces, normalize=True).astype(np.float32)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        arrays: dict[str, np.ndarray] = {"faces.npy": faces, "embeddings.npy": embeddings}
        if labels is not None:
            arrays["labels.npy"] = np.asarray([str(x) for x in labels])
        for name, array in arrays.items():
            np.save(tmp / name, array, allow_pickle=False)
        record = {
            "format": GOLDEN_FORMAT,
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "faces": len(faces),
            "embedding_dim": int(embeddings.shape[1]),
            "labelled": labels is not None,
            **_describe(engine, model),
            "files": {name: file_sha256(tmp / name) for name in sorted(arrays)},
        }
        (tmp / GOLDEN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_golden(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The record and the arrays of a golden folder, every file verified first.

    Raises:
        InputError: not a golden folder (no readable ``golden.json``).
        GoldenIntegrityError: a file is missing or its bytes are not the recorded ones.
    """
    folder = Path(folder)
    path = folder / GOLDEN_FILE
    try:
        record = json.loads(path.read_text())
        files = dict(record["files"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            f"{folder}: not a golden folder ({path.name}: {type(exc).__name__}: {exc})"
        ) from None
    arrays = {}
    for name, digest in files.items():
        if Path(name).name != name or not name.endswith(".npy"):
            raise GoldenIntegrityError(f"{path}: lists {name!r}; expected bare .npy file names")
        found = folder / name
        if not found.is_file():
            raise GoldenIntegrityError(f"{found}: missing; {path.name} records it")
        actual = file_sha256(found)
        if actual != digest:
            raise GoldenIntegrityError(
                f"{found}: sha256 {actual[:16]}... is not the recorded {str(digest)[:16]}...; "
                "the golden folder was changed after it was recorded"
            )
        arrays[name.removesuffix(".npy")] = np.load(found, allow_pickle=False)
    for needed in ("faces", "embeddings"):
        if needed not in arrays:
            raise GoldenIntegrityError(f"{path}: records no {needed}.npy")
    return record, arrays


def _changes(then: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`_describe` records, one phrase each."""
    out = []
    if then["model"].get("sha256") != now["model"].get("sha256"):
        out.append(
            f"model sha256 {str(then['model'].get('sha256'))[:12]} -> "
            f"{str(now['model'].get('sha256'))[:12]}"
        )
    if then.get("hardware_class") != now.get("hardware_class"):
        out.append(f"hardware class {then.get('hardware_class')} -> {now.get('hardware_class')}")
    a, b = then["engine"], now["engine"]
    for key in ("backend", "precision", "device"):
        if a.get(key) != b.get(key):
            out.append(f"engine {key} {a.get(key)} -> {b.get(key)}")
    art_a, art_b = a.get("artifact") or {}, b.get("artifact") or {}
    if art_a.get("sha256") != art_b.get("sha256"):
        out.append(
            f"engine artifact {str(art_a.get('sha256') or 'none')[:12]} -> "
            f"{str(art_b.get('sha256') or 'none')[:12]}"
        )
    va, vb = then.get("versions") or {}, now.get("versions") or {}
    for lib in sorted(set(va) | set(vb)):
        if va.get(lib) != vb.get(lib):
            out.append(f"{lib} {va.get(lib, 'absent')} -> {vb.get(lib, 'absent')}")
    return out


def check_golden(
    folder: str | Path,
    engine: Any,
    model: Any,
    thresholds: Thresholds,
    limits: ReenrolmentParams,
) -> dict[str, Any]:
    """Embed a golden folder's faces with ``engine`` and judge them (module docstring).

    Returns a dict with ``passed``, ``reason`` (one sentence: the worst face and the
    gate it missed, or that every gate holds), ``gates``, ``worst_face``, ``changed``
    (what differs from the recording), and with labels ``flips`` and ``reenrolment``.

    Raises:
        InputError: not a golden folder, or faces the model cannot take.
        GoldenIntegrityError: a file does not match its recorded sha256.
    """
    from arcface_lab.core.lowfar import compare_all_pairs, compare_identification
    from arcface_lab.measure.acceptance import reenrolment

    record, arrays = read_golden(folder)
    then = {k: record.get(k) for k in ("model", "engine", "versions", "hardware_class")}
    now_desc = _describe(engine, model)
    recorded = arrays["embeddings"].astype(np.float32)
    now = engine.embed(arrays["faces"], normalize=True).astype(np.float32)
    if now.shape != recorded.shape:
        raise InputError(
            f"{folder}: recorded embeddings are {recorded.shape}, today's engine gives "
            f"{now.shape}; is this the same model?"
        )
    cosine = np.sum(recorded.astype(np.float64) * now.astype(np.float64), axis=1)
    worst = int(np.argmin(cosine))
    precision = now_desc["engine"]["precision"]
    gate = thresholds.cosine_min.get(precision, thresholds.cosine_min.get("fp32", 0.99999))
    gates = [
        {
            "gate": f"per-face cosine >= {gate:g} ({precision})",
            "measured": float(cosine[worst]),
            "holds": bool(cosine[worst] >= gate),
        }
    ]
    out: dict[str, Any] = {
        "golden": str(folder),
        "faces": len(recorded),
        "cosine_median": float(np.median(cosine)),
        "worst_face": {"index": worst, "cosine": float(cosine[worst])},
        "recorded": then,
        "now": now_desc,
        "changed": _changes(then, now_desc),
    }
    misses = [] if gates[0]["holds"] else [f"face {worst} has cosine {cosine[worst]:.6f}, "
                                           f"under the gate {gate:g} for {precision}"]  # fmt: skip
    if "labels" in arrays:
        labels = arrays["labels"]
        pairs = compare_all_pairs(recorded, now, labels, fars=limits.fars, max_listed=5)
        ident = compare_identification(recorded, now, labels, fpirs=limits.fpirs, max_listed=5)
        flips = {str(p["far"]): p["decision_flips"] for p in pairs["points"] if p["supported"]}
        most = max(flips.values(), default=0)
        flips_max = thresholds.decision_flips_max
        gates.append(
            {
                "gate": f"decision flips <= {flips_max} at FAR {', '.join(flips) or 'none'}",
                "measured": most,
                "holds": flips_max is None or most <= flips_max,
            }
        )
        if not gates[-1]["holds"]:
            at = max(flips, key=lambda f: flips[f])
            misses.append(f"{most} decision flip(s) at FAR {at}, over the {flips_max} allowed")
        block = reenrolment(pairs["mixed"], ident["mixed"], limits)
        gates.append(
            {
                "gate": "a gallery of the recorded embeddings serves today's probes",
                "measured": {True: "re-enrol", False: "no re-enrolment needed", None: "not judged"}[
                    block["required"]
                ],
                "holds": block["required"] is not True,
            }
        )
        if block["required"]:
            misses.append(block["reason"].rstrip("."))
        out["flips"] = flips
        out["reenrolment"] = block
    out["gates"] = gates
    out["passed"] = not misses
    changed = "; ".join(out["changed"]) or "nothing recorded changed"
    out["reason"] = (
        f"Golden check FAIL: {misses[0]}. Changed since recorded: {changed}."
        if misses
        else f"Golden check PASS: every gate holds (worst face {worst}, cosine "
        f"{cosine[worst]:.6f}). Changed since recorded: {changed}."
    )
    return out
