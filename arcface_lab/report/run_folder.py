"""The run folder: the JSON files a run writes, and the one reader everything else uses.

A run folder holds one JSON file per step (:data:`MEASURED`), written by
:func:`arcface_lab.runs.pipeline.run` through :meth:`RunFolder.write` (atomic: a
reader never sees half a file), plus ``error.json`` when the run failed and
``notebooks.json`` once its notebooks ran. ``index.html`` and the notebooks only
read it, through :meth:`RunFolder.read` and :meth:`RunFolder.load`; they never
measure. While a run is in progress the folder is ``.<run-id>.partial``; a failed
run ends as ``<run-id>.failed``.

Bench records carry ``reference: true`` for the reference's own timings, so no
reader infers the reference from the order of the rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arcface_lab.core.files import PARTIAL_SUFFIX, write_json_atomic
from arcface_lab.errors import InputError

__all__ = ["MEASURED", "OPTIONAL", "RunFolder"]

#: The files every measured run has, in the order the run writes them.
MEASURED = ("environment", "optimize", "drift", "verification", "bench", "verdict")
#: Files a run may have: the failure record, the notebooks' status, the run's seconds,
#: the scale section (params ``scale.faces``), the re-alignment check of real faces
#: (``faces:`` data).
OPTIONAL = ("error", "notebooks", "timing", "scale", "alignment")
_NAMES = MEASURED + OPTIONAL


@dataclass(frozen=True)
class RunFolder:
    """One run folder (complete, ``.partial`` in progress, or ``.failed``)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_id(self) -> str:
        """The run's name: the folder's, without the leading dot and ``.partial``."""
        return self.path.name.lstrip(".").removesuffix(PARTIAL_SUFFIX)

    def file(self, name: str) -> Path:
        """The path of the run file ``name`` (``"verdict"`` -> ``verdict.json``)."""
        if name not in _NAMES:
            raise ValueError(f"{name!r} is not a run file; expected one of {', '.join(_NAMES)}")
        return self.path / f"{name}.json"

    def write(self, name: str, payload: Any, default: Callable[[Any], Any] | None = None) -> Path:
        """Write run file ``name`` whole or not at all; ``default`` as for ``json.dumps``."""
        path = self.file(name)
        write_json_atomic(path, payload, default=default)
        return path

    def read(self, name: str, required: bool = True) -> Any:
        """Run file ``name`` parsed; None when it is missing and not ``required``.

        Raises:
            InputError: the folder does not exist, a required file is missing, or a file
                is not valid JSON (each naming the file).
        """
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such run folder")
        path = self.file(name)
        if not path.is_file():
            if required:
                raise InputError(f"{self.path}: no {path.name}; is this a measured run folder?")
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None

    @property
    def rendered(self) -> bool:
        """True when its notebooks ran (``notebooks.json``): its pages are complete."""
        return self.file("notebooks").is_file()

    def copy_to(self, dest: Path) -> RunFolder:
        """A new run folder ``dest`` with this one's measured files, every one of them but
        the notebooks' status (not its pages).

        Raises:
            InputError: ``dest`` exists (a run folder is never overwritten).
        """
        dest = Path(dest)
        if dest.exists():
            raise InputError(f"out_dir {dest}: already exists; runs are never overwritten")
        dest.mkdir(parents=True)
        copy = RunFolder(dest)
        for name in (n for n in _NAMES if n != "notebooks"):
            payload = self.read(name, required=name == "environment")
            if payload is not None:
                copy.write(name, payload)
        return copy

    def load(self) -> dict[str, Any]:
        """Every measured file as one dict (``environment``, ..., ``verdict``).

        Also ``run_dir`` and ``run_id``; ``notebooks`` when they ran.
        """
        out: dict[str, Any] = {"run_dir": str(self.path), "run_id": self.run_id}
        for name in MEASURED:
            out[name] = self.read(name)
        rendered = self.read("notebooks", required=False)
        if rendered is not None:
            out["notebooks"] = rendered
        return out
