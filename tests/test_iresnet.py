"""IResNet matches insightface's key names and shapes; checkpoints load safely."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from arcface_lab.errors import CheckpointError, InputError, UnsafeFileError
from arcface_lab.models.checkpoint import (
    infer_arch,
    load_checkpoint_model,
    load_state_dict,
    seeded_model,
)
from arcface_lab.models.iresnet import ARCH_LAYERS, build_iresnet


def _bn(name: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [
        (f"{name}.weight", (c,)),
        (f"{name}.bias", (c,)),
        (f"{name}.running_mean", (c,)),
        (f"{name}.running_var", (c,)),
        (f"{name}.num_batches_tracked", ()),
    ]


def insightface_keys(layers: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """The state dict of insightface arcface_torch iresnet, written from its file.

    IResNet: conv1, bn1, prelu; layer1-4 of IBasicBlock (bn1, conv1, bn2, prelu,
    conv2(stride), bn3, and for the first block downsample = conv1x1 + BN);
    bn2, dropout (no params), fc (512*7*7 -> 512), features (BatchNorm1d).
    """
    keys = [("conv1.weight", (64, 3, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (64,))]
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True), 1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            keys += _bn(f"{p}.bn1", inplanes)
            keys += [(f"{p}.conv1.weight", (planes, inplanes, 3, 3))]
            keys += _bn(f"{p}.bn2", planes)
            keys += [
                (f"{p}.prelu.weight", (planes,)),
                (f"{p}.conv2.weight", (planes, planes, 3, 3)),
            ]
            keys += _bn(f"{p}.bn3", planes)
            if b == 0:
                keys += [(f"{p}.downsample.0.weight", (planes, inplanes, 1, 1))]
                keys += _bn(f"{p}.downsample.1", planes)
            inplanes = planes
    keys += [*_bn("bn2", 512), ("fc.weight", (512, 512 * 49)), ("fc.bias", (512,))]
    return keys + _bn("features", 512)


@pytest.mark.parametrize("arch", ["r50", "r100"])
def test_state_dict_names_and_shapes_match_insightface(arch: str) -> None:
    ours = [(k, tuple(v.shape)) for k, v in build_iresnet(arch).state_dict().items()]
    assert sorted(ours) == sorted(insightface_keys(ARCH_LAYERS[arch]))


@pytest.mark.parametrize("arch", list(ARCH_LAYERS))
def test_architecture_is_inferred_from_keys(arch: str) -> None:
    state = {k: torch.zeros(s) for k, s in insightface_keys(ARCH_LAYERS[arch])}
    assert infer_arch(state) == (arch, 512)


def test_unknown_block_counts_are_named() -> None:
    state = {k: torch.zeros(s) for k, s in insightface_keys((2, 2, 2, 3))}
    with pytest.raises(CheckpointError, match=r"blocks per stage \[2, 2, 2, 3\] match no iresnet"):
        infer_arch(state)


def test_unknown_arch_lists_known() -> None:
    with pytest.raises(InputError, match="unknown architecture 'r9'.*r18, r34, r50, r100, r200"):
        build_iresnet("r9")


@pytest.fixture(scope="module")
def r18_state() -> dict[str, torch.Tensor]:
    return seeded_model("r18").state_dict()


def _same_output(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return bool(torch.equal(a.eval()(x), b.eval()(x)))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "model_nested"])
def test_checkpoint_wrappers_load_strict(tmp_path: Path, r18_state, wrap: str) -> None:
    obj: object = {
        "plain": r18_state,
        "state_dict": {"state_dict": r18_state, "epoch": 3},
        "module_prefix": {f"module.{k}": v for k, v in r18_state.items()},
        "model_nested": {"model": {"state_dict": r18_state}},
    }[wrap]
    torch.save(obj, tmp_path / "backbone.pth")
    model = load_checkpoint_model(tmp_path / "backbone.pth")
    ref = build_iresnet("r18")
    ref.load_state_dict(r18_state, strict=True)
    assert _same_output(model, ref)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, r18_state) -> None:
    state = dict(r18_state)
    del state["fc.bias"]
    state["head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_model(tmp_path / "bad.pth", arch="r18")
    msg = str(err.value)
    assert "bad.pth" in msg and "missing keys (1): fc.bias" in msg
    assert "unexpected keys (1): head.weight" in msg


def test_shape_mismatch_is_listed(tmp_path: Path, r18_state) -> None:
    state = dict(r18_state)
    state["fc.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"fc.bias: checkpoint \(7,\), r18 \(512,\)"):
        load_checkpoint_model(tmp_path / "bad.pth", arch="r18")


def test_not_a_mapping_of_tensors(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list.pth: expected a state dict.*got list"):
        load_state_dict(tmp_path / "list.pth")
    torch.save({"a": torch.zeros(2), "b": 3}, tmp_path / "mixed.pth")
    with pytest.raises(
        CheckpointError, match=r"mixed.pth: .*1 entries are not tensors \(first: 'b'\)"
    ):
        load_state_dict(tmp_path / "mixed.pth")


def test_truncated_and_missing_files(tmp_path: Path, r18_state) -> None:
    torch.save(r18_state, tmp_path / "ok.pth")
    data = (tmp_path / "ok.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch checkpoint"):
        load_state_dict(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint file"):
        load_state_dict(tmp_path / "nope.pth")


class _Payload:
    """Unpickling this would create ``target``: the file must never appear."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.target}",))


def test_malicious_checkpoint_never_runs(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"fc.weight": _Payload(str(target))}, f)
    torch.save({"x": _Payload(str(target))}, tmp_path / "evil_zip.pth")
    for name in ("evil.pth", "evil_zip.pth"):
        with pytest.raises((UnsafeFileError, CheckpointError), match=name):
            load_state_dict(tmp_path / name)
    assert not target.exists()


def test_malicious_zip_checkpoint_is_unsafe_file_error(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    torch.save({"x": _Payload(str(target))}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeFileError, match="evil.pth: refused to load"):
        load_state_dict(tmp_path / "evil.pth")
    assert not target.exists()


def test_seeded_model_is_deterministic_and_fp16_safe() -> None:
    a, b = seeded_model("r18", seed=1), seeded_model("r18", seed=1)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not torch.equal(a.fc.weight, seeded_model("r18", seed=2).fc.weight)
    from arcface_lab.core.preprocess import Preprocess
    from arcface_lab.data.images import synthetic_faces

    peaks: list[float] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: peaks.append(float(out.abs().max())))
        for m in a.modules()
        if not list(m.children())
    ]
    x = torch.from_numpy(Preprocess()(synthetic_faces(8, seed=9)))
    with torch.no_grad():
        out = a(x)
    for h in hooks:
        h.remove()
    # fp16 overflows at 65504: seeded activations stay orders of magnitude below.
    assert max(peaks) < 1000, max(peaks)
    assert torch.isfinite(out).all()


def test_a_seeded_model_has_the_same_bytes_whatever_kernels_run(tmp_path: Path) -> None:
    """seeded:r18's sha256 with torch's kernels at their plainest (ATEN_CPU_CAPABILITY=default),
    oneDNN capped at SSE4.1 and MKL at AVX2, in a fresh process, is the one computed here: the
    weights do not depend on the CPU they were made on."""
    import subprocess
    import sys

    from arcface_lab.models.source import resolve_model

    here = resolve_model("seeded:r18", cache_dir=tmp_path / "here").sha256()
    code = (
        "import sys; from arcface_lab.models.source import resolve_model; "
        "print(resolve_model('seeded:r18', cache_dir=sys.argv[1]).sha256())"
    )
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": "default",  # torch's own vector kernels (randn among them)
        "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's convolutions
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # MKL's dgemm, which float64 convolutions use
    }
    plain = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "plain")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert plain.stdout.strip().splitlines()[-1] == here


def test_seeded_weights_are_cached_and_verified_before_use(tmp_path, caplog) -> None:
    import torch

    from arcface_lab.models.source import resolve_model

    first = resolve_model("seeded:r18", cache_dir=tmp_path).torch_module()
    (cached,) = (tmp_path / "seeded").glob("r18-seed0-*.pt")
    assert (cached.parent / (cached.name + ".sha256")).is_file()
    again = resolve_model("seeded:r18", cache_dir=tmp_path).torch_module()  # from the cache
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: never loaded, made again
    cached.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        remade = resolve_model("seeded:r18", cache_dir=tmp_path).torch_module()
    assert "recorded" in caplog.text and "made again" in caplog.text
    for a, b in zip(first.state_dict().values(), remade.state_dict().values(), strict=True):
        assert torch.equal(a, b)
