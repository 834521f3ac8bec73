"""arcface_lab: turn an ArcFace model into a fast inference engine, and prove it is the same model.

The public API is re-exported here; heavy libraries (torch, onnxruntime,
tensorrt, boto3, papermill) are imported only by the modules that use them.
"""

from arcface_lab.core.lowfar import compare_all_pairs, compare_identification
from arcface_lab.core.metrics import compare_verification, cosine_drift
from arcface_lab.core.preprocess import Preprocess
from arcface_lab.core.version import __version__
from arcface_lab.data.images import load_images, synthetic_faces
from arcface_lab.engines.registry import create_engine, list_backends, register_backend
from arcface_lab.errors import (
    ArcfaceLabError,
    BackendUnavailable,
    InputError,
    ParamsError,
    UnsafeFileError,
)
from arcface_lab.measure.optimize import optimize
from arcface_lab.models.source import resolve_model

__all__ = [
    "ArcfaceLabError",
    "BackendUnavailable",
    "InputError",
    "ParamsError",
    "Preprocess",
    "UnsafeFileError",
    "__version__",
    "compare_all_pairs",
    "compare_identification",
    "compare_verification",
    "cosine_drift",
    "create_engine",
    "list_backends",
    "load_images",
    "optimize",
    "register_backend",
    "resolve_model",
    "synthetic_faces",
]
