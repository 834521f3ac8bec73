"""What a worker process is doing now, for the run that waits on it.

A long engine build (the INT8 search: calibration, per-quantizer sensitivity, gate
rounds) runs in a bench worker; the run that waits shows only a label and a clock
unless the worker says where it is. The run names a file in ``ARCFACE_LAB_PROGRESS``;
the worker replaces its one line at each step (:func:`report_phase`, atomically, so a
reader never sees half a line) and the run reads it while it waits (:func:`read_phase`).
Without the variable :func:`report_phase` does nothing: a library call in a notebook or
a script writes no file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from arcface_lab.core.files import write_text_atomic

__all__ = ["PROGRESS_ENV", "read_phase", "report_phase"]

#: The environment variable naming the phase file of this process.
PROGRESS_ENV = "ARCFACE_LAB_PROGRESS"


def report_phase(text: str) -> None:
    """Say what this process is doing now (one line), if the run waiting on it asked."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with contextlib.suppress(OSError):  # progress must never fail the work
            write_text_atomic(path, text.splitlines()[0] if text else "")


def read_phase(path: str | os.PathLike[str] | None) -> str:
    """The last phase written to ``path`` ("" when none yet)."""
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
