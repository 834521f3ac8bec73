"""Native TensorRT: a plan built from the canonical ONNX model, cached, run by ``execute_async_v3``.

Building is a chain of small steps, each testable on its own (the shape of
Polygraphy's ``NetworkFromOnnxPath -> EngineBytesFromNetwork -> EngineFromBytes``):

1. :func:`parse_profile` checks the optimization profile (min/opt/max batch);
2. :func:`choose_recipe` decides how a precision is built for a TensorRT major version:

   - TensorRT 10: the FP32 ONNX model; ``fp16`` sets ``BuilderFlag.FP16`` (weak typing);
   - TensorRT 11 and newer: every network is strongly typed and the precision flags are
     gone, so ``fp16`` builds an FP16 copy of the ONNX model whose inputs and outputs
     stay FP32 (:func:`~arcface_lab.models.onnx_io.fp16_copy`);
   - ``BuilderFlag.TF32`` is cleared unless the ``tf32`` option asks for it, so ``fp32``
     is a strict FP32 baseline;

3. :func:`artifact_inputs` lists everything that makes a plan valid (its store key);
4. the plan is built with ``Builder.build_serialized_network`` (a timing cache kept in
   the engine store beside it), stored through the engine store (verified by sha256
   before every deserialization) and deserialized with ``Runtime.deserialize_cuda_engine``;
5. :func:`layer_precisions` reads the engine inspector's JSON: an engine asked for
   ``fp16`` with no FP16 layer is an error, never a silent FP32 engine.

``tensorrt`` and ``torch`` (CUDA build; its tensors are the device buffers and its
streams the CUDA streams) are imported only when an engine is created.

Options (``backends.options.tensorrt`` in a params file):
    batch_min, batch_opt, batch_max: the optimization profile (default 1,
        ``min(32, batch_size)``, ``batch_size``); the engine's batch size is capped at
        ``batch_max`` and larger batches are split.
    workspace_mb: builder workspace memory pool limit (default 1024).
    tf32: allow TF32 for FP32 layers (default False: strict FP32).
    hardware_compatibility: build an Ampere+ hardware-compatible plan (default False).
    timing_cache: keep a timing cache in the engine store (default True).
    store: an :class:`~arcface_lab.store.EngineStore` (default: local, under the model cache).

Modules: :mod:`~arcface_lab.engines.tensorrt.recipe` (profile, recipe, key inputs),
:mod:`~arcface_lab.engines.tensorrt.inspection` (layer precisions read back),
:mod:`~arcface_lab.engines.tensorrt.build` (TensorRT glue and the plan build) and
:mod:`~arcface_lab.engines.tensorrt.engine` (the backend).
"""

from arcface_lab.engines.tensorrt.engine import TensorRTEngine, TensorRTOptions
from arcface_lab.engines.tensorrt.inspection import (
    check_precision,
    classify_dtype,
    layer_precisions,
)
from arcface_lab.engines.tensorrt.recipe import (
    Profile,
    Recipe,
    artifact_inputs,
    choose_recipe,
    parse_profile,
)

__all__ = [
    "Profile",
    "Recipe",
    "TensorRTEngine",
    "TensorRTOptions",
    "artifact_inputs",
    "check_precision",
    "choose_recipe",
    "classify_dtype",
    "layer_precisions",
    "parse_profile",
]
