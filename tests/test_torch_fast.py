"""PyTorch optimized: bf16 + channels-last on CPU; fp16 + CUDA graphs on a GPU."""

from __future__ import annotations

import pytest
import torch

from arcface_lab.engines.registry import create_engine
from arcface_lab.engines.torch_fast import CPU_FP16_WARNING, TorchFastEngine
from arcface_lab.errors import BackendUnavailable, InputError
from tests.conftest import cosines

CUDA = torch.cuda.is_available()


def test_bf16_channels_last_on_cpu_stays_the_same_model(r18, faces, torch_r18) -> None:
    with create_engine("torch_fast", r18, precision="bf16", device="cpu", strict=True) as engine:
        emb = engine.embed(faces)
        details = engine.info.details
    assert engine.info.backend == "torch_fast" and engine.info.device == "cpu"
    assert details["channels_last"] is True and details["cuda_graphs"] is False
    assert details["fp32_layers"] == ["features"]
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.999
    # The model source's module is shared with the reference: it must stay FP32.
    assert next(r18.torch_module().parameters()).dtype == torch.float32


def test_fp32_matches_the_reference(r18, faces, torch_r18) -> None:
    with create_engine("torch_fast", r18, device="cpu", strict=True) as engine:
        emb = engine.embed(faces)
        assert engine.info.details["fp32_layers"] == []
    assert cosines(torch_r18.embed(faces), emb).min() >= 0.99999


def test_unsupported_precision_is_unavailable(r18) -> None:
    with pytest.raises(
        BackendUnavailable,
        match=r"^torch_fast: precision 'int8' not supported \(supported: fp32, fp16, bf16\)$",
    ):
        TorchFastEngine(r18, precision="int8", device="cpu")


def test_fp16_on_cpu_is_allowed_with_a_warning(r18) -> None:
    with TorchFastEngine(r18, precision="fp16", device="cpu") as engine:
        assert CPU_FP16_WARNING in engine.info.warnings
        assert "4-27x slower" in CPU_FP16_WARNING


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cuda_graphs": True}, r"^torch_fast options: cuda_graphs: needs a CUDA device, got cpu$"),
        (
            {"compile": "fastest"},
            r"^torch_fast options: compile: expected true, false or one of default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs, got 'fastest'$",
        ),
        (
            {"channels_last": "yes"},
            r"^torch_fast options: channels_last: expected true or false, got 'yes'$",
        ),
    ],
)
def test_bad_options_name_the_option(r18, options, message) -> None:
    with pytest.raises(InputError, match=message):
        TorchFastEngine(r18, precision="fp32", device="cpu", **options)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA device (torch.cuda.is_available() is False)")
def test_fp16_cuda_graphs_replay_at_two_batch_sizes(r18, faces, torch_r18) -> None:
    with create_engine("torch_fast", r18, precision="fp16", device="cuda", strict=True) as engine:
        assert engine.info.details["cuda_graphs"] is True
        first = engine.embed(faces, batch_size=16)
        second = engine.embed(faces, batch_size=5)  # 5, 5, 5, 1: two more graphs
        again = engine.embed(faces, batch_size=16)  # replay, no new capture
        sizes = engine.info.details["graph_batch_sizes"]
    assert sizes == [1, 5, 16]
    ref = torch_r18.embed(faces)
    assert cosines(ref, first).min() >= 0.999
    assert cosines(ref, second).min() >= 0.999
    assert cosines(first, again).min() >= 0.99999
