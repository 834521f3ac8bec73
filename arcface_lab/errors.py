"""One exception hierarchy for arcface_lab.

Every error a user can cause is an :class:`InputError`: the command line maps
it to exit status 2 and prints its message on one line, so the message must
say which file, field or flag was wrong and what was expected. Everything else
derives from :class:`ArcfaceLabError` and maps to exit status 1.
"""

from __future__ import annotations

__all__ = [
    "ArcfaceLabError",
    "BackendUnavailable",
    "CheckpointError",
    "DataError",
    "EngineError",
    "EngineIntegrityError",
    "InputError",
    "ModelFormatError",
    "ParamsError",
    "StoreError",
    "UnknownBackendError",
    "UnsafeFileError",
    "ValidationError",
]


class ArcfaceLabError(Exception):
    """Root of every error raised on purpose by arcface_lab."""

    #: Exit status the command line uses for this error.
    exit_code: int = 1


class InputError(ArcfaceLabError):
    """Bad input or usage: a file, a field or a flag that is not what was expected."""

    exit_code = 2


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


class EngineIntegrityError(ArcfaceLabError):
    """A stored artifact does not match its recorded checksum or size."""


class StoreError(ArcfaceLabError):
    """The engine store cannot read or write an artifact."""


class ValidationError(InputError):
    """Validation inputs that cannot give a meaningful result (too few pairs, ...)."""
