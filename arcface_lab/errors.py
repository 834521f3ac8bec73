"""One exception hierarchy for arcface_lab.

Every error a user can cause is an :class:`InputError`: the command line maps
it to exit status 2 and prints its message on one line, so the message must
say which file, field or flag was wrong and what was expected. Everything else
derives from :class:`ArcfaceLabError` and maps to exit status 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ArcfaceLabError",
    "BackendUnavailable",
    "CheckpointError",
    "ConversionError",
    "DataError",
    "DiskFullError",
    "EngineError",
    "EngineIntegrityError",
    "GoldenIntegrityError",
    "InputError",
    "ModelFormatError",
    "ModelIntegrityError",
    "NotebookError",
    "ParamsError",
    "StoreError",
    "UnknownBackendError",
    "UnsafeFileError",
    "ValidationError",
    "VerdictFailed",
    "WorkerTimeout",
    "error_from_record",
    "error_record",
]


class ArcfaceLabError(Exception):
    """Root of every error raised on purpose by arcface_lab."""

    #: Exit status the command line uses for this error.
    exit_code: int = 1


class InputError(ArcfaceLabError):
    """Bad input or usage: a file, a field or an argument that is not what was expected.

    ``argument`` names the library argument at fault (``"model"``, ``"batch_size"``) when
    there is one; the message then starts with that name, and the command line puts its
    flag (``--model``) in its place: library code never names a flag.
    """

    exit_code = 2

    def __init__(self, message: str = "", argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument

    def for_flags(self, flags: Mapping[str, str]) -> str:
        """The message with its leading argument name replaced by ``flags[argument]``."""
        text = str(self)
        flag = flags.get(self.argument or "")
        if flag and text.startswith(str(self.argument)):
            return flag + text[len(str(self.argument)) :]
        return text


class ParamsError(InputError):
    """A params file (or a value in it) is invalid; the message names the field."""


class CheckpointError(InputError):
    """A weights file cannot be used: wrong format, wrong keys, wrong shapes."""


class ModelFormatError(InputError):
    """An ONNX model is not a usable face-embedding model."""


class UnsafeFileError(InputError):
    """A file would need unsafe handling (arbitrary unpickling, paths outside its folder)."""


class DataError(InputError):
    """Input images or pair sets have the wrong shape, type, size or encoding."""


class UnknownBackendError(InputError):
    """A backend name that no registered backend has."""


class BackendUnavailable(ArcfaceLabError):
    """A known backend that cannot run here (missing package, no device, ...)."""


class EngineError(ArcfaceLabError):
    """An engine failed to build or run."""


class ConversionError(EngineError):
    """A model converter (pnnx, MNN's) could not convert the model, or its runtime cannot
    run what came out; ``operators`` names the operators at fault when that is known.

    Not an :class:`InputError`: the model is valid, another backend can run it, so
    optimize records the candidate as ``error`` and goes on.
    """

    def __init__(self, message: str = "", operators: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.operators = list(operators)


class WorkerTimeout(EngineError):
    """A worker process ran past its time limit and was killed, with what it held;
    ``seconds`` is the limit it had (None when rebuilt from a record without it)."""

    def __init__(self, message: str = "", seconds: float | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds


class EngineIntegrityError(ArcfaceLabError):
    """A stored artifact does not match its recorded checksum or size."""


class ModelIntegrityError(EngineIntegrityError):
    """A model file (a zoo download) does not match the sha256 it is listed with."""


class GoldenIntegrityError(EngineIntegrityError):
    """A golden folder's file is missing or does not match the sha256 it was recorded with."""


class StoreError(ArcfaceLabError):
    """The engine store cannot read or write an artifact."""


class DiskFullError(StoreError):
    """A store or cache folder has no room left for the file being written."""


class ValidationError(InputError):
    """Validation inputs that cannot give a meaningful result (too few pairs, ...)."""


class NotebookError(ArcfaceLabError):
    """A notebook failed to execute; papermill's error notebook is kept in the run folder.

    ``failed`` holds the failed notebooks' statuses
    (:class:`arcface_lab.report.notebooks.NotebookStatus`).
    """

    def __init__(self, message: str, failed: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


class VerdictFailed(ArcfaceLabError):
    """A run's verdict is FAIL and the caller asked for that to be an error (exit 3).

    Raised by the acceptance notebook with ``fail_on_verdict``, so papermill exits non-zero.
    """

    exit_code = 3


def _error_classes() -> dict[str, type[ArcfaceLabError]]:
    found: dict[str, type[ArcfaceLabError]] = {}
    todo: list[type[ArcfaceLabError]] = [ArcfaceLabError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def error_record(exc: ArcfaceLabError) -> dict[str, Any]:
    """The JSON a worker process writes for ``exc``; :func:`error_from_record` raises it again."""
    return {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}


def error_from_record(record: Mapping[str, Any]) -> ArcfaceLabError:
    """The error of a worker's :func:`error_record`, with its class (and so its exit code).

    A class unknown here (a plugin's own error) becomes :class:`InputError` when its exit
    code was 2 and :class:`EngineError` otherwise, so bad input still exits 2.
    """
    message = str(record.get("message", ""))
    cls = _error_classes().get(str(record.get("type", "")))
    if cls is None or cls is NotebookError:
        cls = InputError if record.get("exit_code") == InputError.exit_code else EngineError
    return cls(message)
