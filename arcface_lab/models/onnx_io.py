"""ONNX in and out: export, checks, static-to-dynamic batch, FP16 copies.

The canonical model every optimized backend starts from is an FP32 ONNX file
with one 4-D input and one 2-D output and a dynamic batch axis. Files from
elsewhere (insightface's model zoo ships batch-1 files) are checked before
use: external data must stay inside the model's folder, which is verified
from the graph alone before any external byte is read.

FP16 copies are made with ``onnxconverter-common`` (``keep_io_types=True``,
so callers keep feeding and reading FP32), not by hand.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from arcface_lab.core.files import atomic_path
from arcface_lab.errors import BackendUnavailable, ModelFormatError, UnsafeFileError

if TYPE_CHECKING:
    import onnx
    import torch

__all__ = [
    "DEFAULT_OPSET",
    "OnnxModelInfo",
    "check_external_data",
    "check_finite_weights",
    "check_self_contained",
    "export_onnx",
    "external_data_files",
    "fp16_copy",
    "inspect_onnx",
    "load_onnx",
    "make_batch_dynamic",
]

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class OnnxModelInfo:
    """What arcface_lab needs to know about a face-embedding ONNX model."""

    path: Path
    input_name: str
    input_shape: tuple[int | str, ...]
    output_name: str
    output_shape: tuple[int | str, ...]
    opset: int

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)

    @property
    def embedding_dim(self) -> int | None:
        dim = self.output_shape[-1] if self.output_shape else None
        return dim if isinstance(dim, int) else None


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("the 'onnx' package is missing: pip install onnx") from None
    return onnx


def check_external_data(model: onnx.ModelProto, folder: str | Path, source: str) -> None:
    """Refuse external-data locations that leave ``folder`` (absolute, ``..``, symlinks)."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    root = Path(folder).resolve()
    for tensor in _get_all_tensors(model):
        if tensor.data_location != tensor.EXTERNAL:
            continue
        location = ExternalDataInfo(tensor).location
        target = (root / location).resolve()
        if (
            not location
            or os.path.isabs(location)
            or ".." in Path(location).parts
            or not target.is_relative_to(root)
        ):
            raise UnsafeFileError(
                f"{source}: tensor {tensor.name!r} points its external data at "
                f"{location!r}, outside the model's folder {root}; refusing to read it"
            )


def external_data_files(model: onnx.ModelProto, folder: str | Path, source: str) -> list[Path]:
    """The files ``model`` keeps its external data in, sorted, each checked to exist.

    Locations are confined to ``folder`` first (:func:`check_external_data`).
    """
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    check_external_data(model, folder, source)
    root = Path(folder)
    files = sorted(
        {
            root / ExternalDataInfo(t).location
            for t in _get_all_tensors(model)
            if t.data_location == t.EXTERNAL
        }
    )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ModelFormatError(
            f"{source}: its external data file(s) {', '.join(missing)} are not in {root}; "
            "keep them beside the .onnx file"
        )
    return files


def check_self_contained(path: str | Path, what: str) -> None:
    """Refuse an ONNX file that points at external data: store artifacts are single files.

    The engine store keeps one file per artifact; a graph that still names
    ``w.bin`` would load only where that file happened to lie beside it.
    """
    onnx = _onnx()
    model = onnx.load(str(path), load_external_data=False)
    from onnx.external_data_helper import _get_all_tensors

    external = [t.name for t in _get_all_tensors(model) if t.data_location == t.EXTERNAL]
    if external:
        raise ModelFormatError(
            f"{what}: the built graph {path} keeps {len(external)} tensor(s) in external data "
            f"(first {external[0]!r}); an engine-store artifact must be one self-contained file"
        )


#: Protobuf cannot serialize a message over 2 GiB: the limit of a self-contained ONNX file.
PROTOBUF_LIMIT = 2**31 - 1


def check_finite_weights(model: onnx.ModelProto, path: str | Path) -> None:
    """Refuse a model whose floating-point initializers hold NaN or infinity.

    Such weights give non-finite embeddings on every backend; said here, the error
    names the file and the tensor instead of surfacing later as an engine failure.
    """
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.data_location == tensor.EXTERNAL and not tensor.raw_data:
            continue  # not loaded: checked where the data is read
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise ModelFormatError(
                f"{path}: weight {tensor.name!r} holds {bad} NaN or infinite value(s) of "
                f"{values.size}; the model cannot give finite embeddings"
            )


def load_onnx(path: str | Path, load_external: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, checking external-data locations before reading any of it."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... on garbage
        raise ModelFormatError(f"{path}: not a readable ONNX model ({exc})") from None
    check_external_data(model, path.parent, str(path))
    if load_external:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise ModelFormatError(f"{path}: cannot read its external data ({exc})") from None
    return model


def _dims(value_info: Any) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def _graph_inputs(model: onnx.ModelProto) -> list[Any]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def inspect_onnx(model: onnx.ModelProto, path: str | Path) -> OnnxModelInfo:
    """Check ``model`` is a face-embedding model: one 4-D input, one output."""
    inputs = _graph_inputs(model)
    outputs = list(model.graph.output)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelFormatError(
            f"{path}: expected exactly one input (a 4-D image batch), got {names}"
        )
    if len(outputs) != 1:
        names = ", ".join(o.name for o in outputs) or "none"
        raise ModelFormatError(f"{path}: expected exactly one output (the embedding), got {names}")
    in_shape, out_shape = _dims(inputs[0]), _dims(outputs[0])
    if len(in_shape) != 4:
        raise ModelFormatError(
            f"{path}: input {inputs[0].name!r} has shape {list(in_shape)}; expected 4-D "
            "(batch, 3, H, W) or (batch, H, W, 3)"
        )
    has_shape = outputs[0].type.tensor_type.HasField("shape")
    if has_shape and len(out_shape) != 2:
        raise ModelFormatError(
            f"{path}: output {outputs[0].name!r} has shape {list(out_shape)}; expected 2-D "
            "(batch, embedding): flatten the embedding in the model"
        )
    if len(model.graph.sparse_initializer):
        names = ", ".join(t.values.name for t in model.graph.sparse_initializer[:3])
        raise ModelFormatError(
            f"{path}: {len(model.graph.sparse_initializer)} sparse initializer(s) ({names}); "
            "expected dense weights: re-export the model without sparse tensors"
        )
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxModelInfo(
        path=Path(path),
        input_name=inputs[0].name,
        input_shape=in_shape,
        output_name=outputs[0].name,
        output_shape=out_shape,
        opset=int(opset),
    )


def make_batch_dynamic(model: onnx.ModelProto) -> int:
    """Rewrite a static batch axis to ``batch``; return how many reshapes were fixed.

    Besides the input and output shapes, ``Reshape`` nodes whose constant
    target shape starts with the old batch size 1 (a flatten exported with a
    fixed batch) get ``0`` there, which ONNX reads as "copy the input's batch".
    Callers must verify the result numerically (see :func:`verify_batch_dynamic`).
    """
    from onnx import numpy_helper

    inp, out = _graph_inputs(model)[0], model.graph.output[0]
    for vi in (inp, out):
        dim0 = vi.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    del model.graph.value_info[:]  # stale intermediate shapes would pin the batch again
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = node.attribute[0].t
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in consts:
            continue
        tensor = consts[node.input[1]]
        shape = numpy_helper.to_array(tensor)
        if shape.ndim == 1 and shape.size >= 2 and shape[0] == 1:
            shape = shape.copy()
            shape[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), tensor.name))
            fixed += 1
    return fixed


def export_onnx(
    model: torch.nn.Module,
    dest: str | Path,
    input_shape: tuple[int, int, int] = (3, 112, 112),
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` to a single-file FP32 ONNX with a dynamic batch axis.

    The file is written beside ``dest`` and renamed into place only after
    ``onnx.checker`` accepts it, so an interrupted export leaves nothing.
    """
    import torch

    if opset < 17:
        raise ModelFormatError(f"opset {opset}: expected >= 17")
    model = model.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    with atomic_path(dest, suffix=".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter: one file, no onnxscript dependency, fast. It warns that
        # it is deprecated in favour of dynamo; its output is still checked below.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
        _onnx().checker.check_model(str(tmp))
    return Path(dest)


def fp16_copy(src: str | Path, dest: str | Path) -> Path:
    """Write an FP16 copy of ``src`` whose inputs and outputs stay FP32."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise BackendUnavailable(
            "fp16 ONNX models need 'onnxconverter-common': pip install onnxconverter-common"
        ) from None
    model = load_onnx(src)
    with warnings.catch_warnings():  # one warning per tiny weight clamped to fp16's range
        warnings.simplefilter("ignore", UserWarning)
        half = float16.convert_float_to_float16(model, keep_io_types=True)
    with atomic_path(dest, suffix=".onnx") as tmp:
        _onnx().save(half, str(tmp))
    return Path(dest)
