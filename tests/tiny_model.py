"""A tiny ONNX face model (one strided convolution, one matrix product, 16-D embedding).

Fast enough to stream 100k faces through ONNX Runtime on two cores; it computes a
fixed function of the crop, which is all a streaming or sharding test needs. With
``defect`` it is wrong in one way, for the tests of bad models.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The embedding dimension of the tiny model.
TINY_DIM = 16


def write_tiny_onnx(path: Path, defect: str | None = None) -> Path:
    """Write the tiny model to ``path``; ``defect`` is None, "nan", "out4d" or "sparse"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (4, 3, 8, 8)).astype(np.float32)
    fc = rng.normal(0, 0.1, (4 * 14 * 14, TINY_DIM)).astype(np.float32)
    if defect == "nan":
        fc[3, 2] = np.inf
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[8, 8]),
        helper.make_node("Flatten", ["c"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["emb"]),
    ]
    out = helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", TINY_DIM])
    if defect == "out4d":
        nodes, out = nodes[:1], helper.make_tensor_value_info(
            "c", TensorProto.FLOAT, ["b", 4, 14, 14]
        )
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [out],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    if defect == "sparse":
        del graph.initializer[1]
        values = numpy_helper.from_array(fc.ravel(), "fc")
        indices = numpy_helper.from_array(np.arange(fc.size, dtype=np.int64), "fc_indices")
        graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, fc.shape))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path
