"""The host probe: CPU flags to a hardware class, injection, and the real machine."""

from __future__ import annotations

import pytest

from arcface_lab.core.host import (
    CLASS_ENV,
    CPU_CLASSES,
    ISA_CAP_ENV,
    ISA_CAPS,
    Host,
    cpu_class,
    cpu_generation,
    isa_cap,
    parse_cpuinfo,
    probe,
    real_cpu,
)
from arcface_lab.errors import InputError

ZEN3 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    "flags\t\t: fpu sse4_1 sse4_2 avx f16c avx2 fma bmi2 sha_ni\n"
)
ZEN4 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n"
    "flags\t\t: fpu avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni gfni\n"
)


@pytest.mark.parametrize(
    "flags, expected",
    [
        ("avx2 fma", "cpu-avx2"),
        ("avx2 fma avx_vnni", "cpu-avx2-vnni"),
        ("avx2 avx512f avx512bw", "cpu-avx512"),
        ("avx2 avx512f avx512_vnni", "cpu-avx512-vnni"),
        ("avx2 avx512f avx512_vnni avx512_bf16", "cpu-avx512-bf16"),
        ("avx2 avx512f avx512_bf16 amx_tile amx_bf16 amx_int8", "cpu-amx"),
        ("sse4_2", "cpu-baseline"),
    ],
)
def test_flags_name_the_class(flags: str, expected: str) -> None:
    assert cpu_class(set(flags.split())) == expected
    assert cpu_class(CPU_CLASSES[expected]) == expected  # an injected host is its own class


def test_cpuinfo_of_zen3_and_zen4() -> None:
    model, vendor, flags = parse_cpuinfo(ZEN3)
    assert (model, vendor) == ("AMD EPYC 7B13", "AuthenticAMD")
    assert "sha_ni" not in flags and {"avx2", "fma"} <= flags  # inference flags only
    assert cpu_class(flags) == "cpu-avx2"
    assert cpu_class(parse_cpuinfo(ZEN4)[2]) == "cpu-avx512-bf16"
    assert parse_cpuinfo("") == ("", "", frozenset())


@pytest.mark.parametrize(
    "vendor, family, model, expected",
    [
        ("AuthenticAMD", 25, 1, "Zen 3"),  # EPYC 7xx3 (Milan)
        ("AuthenticAMD", 25, 17, "Zen 4"),  # EPYC 9xx4 (Genoa), a VM's bare "AMD EPYC"
        ("AuthenticAMD", 25, 0x61, "Zen 4"),
        ("AuthenticAMD", 25, 0x21, "Zen 3"),
        ("AuthenticAMD", 23, 0x31, "Zen 2"),
        ("AuthenticAMD", 26, 2, "Zen 5"),
        ("GenuineIntel", 6, 143, ""),  # Intel names itself in the model name
        ("AuthenticAMD", 15, 1, ""),
    ],
)
def test_amd_family_and_model_name_the_generation(
    vendor: str, family: int, model: int, expected: str
) -> None:
    text = f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
    assert cpu_generation(text) == expected
    assert cpu_generation(ZEN3) == ""  # no family line: unknown, not guessed


def test_vnni_and_native_bf16_come_from_the_flags() -> None:
    zen3, zen4 = Host.for_class("cpu-avx2").cpu, Host.for_class("cpu-avx512-bf16").cpu
    assert not zen3.vnni and not zen3.native_bf16
    assert zen4.vnni and zen4.native_bf16
    assert Host.for_class("cpu-avx2-vnni").cpu.vnni
    assert not Host.for_class("cpu-avx512-vnni").cpu.native_bf16


def test_a_class_is_injected_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CLASS_ENV, "cpu-avx2")
    host = probe()
    assert host.cls == "cpu-avx2" and host.injected == "cpu-avx2" and host.device == "cpu"
    assert "injected" in host.describe() and host.to_dict()["class"] == "cpu-avx2"
    monkeypatch.setenv(CLASS_ENV, "gpu-sm90")
    gpu = probe()
    assert gpu.cls == "gpu-sm90" and gpu.device == "cuda" and gpu.gpus[0].capability == (9, 0)
    monkeypatch.setenv(CLASS_ENV, "cpu-avx9")
    with pytest.raises(InputError, match=r"hardware class 'cpu-avx9': unknown; expected one of"):
        probe()


def test_the_real_machine_is_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLASS_ENV, raising=False)
    host = probe()
    assert host.injected is None and host.cpu.cores >= 1 and host.cpu.threads >= 1
    assert host.cpu.cls in CPU_CLASSES and host.versions["numpy"]
    if not host.gpus:
        assert host.cls == host.cpu.cls


def test_store_keys_use_the_real_cpu_not_an_injected_class(monkeypatch) -> None:
    import sys

    from arcface_lab.store import device_fingerprint

    monkeypatch.setitem(sys.modules, "torch", None)  # no GPU fingerprint
    monkeypatch.delenv(CLASS_ENV, raising=False)
    real = device_fingerprint()
    monkeypatch.setenv(CLASS_ENV, "cpu-baseline")
    assert device_fingerprint() == real


@pytest.mark.parametrize(
    "cap, expected",
    [
        ("AVX2", "cpu-avx2"),
        ("avx2_vnni", "cpu-avx2-vnni"),
        ("AVX512_CORE", "cpu-avx512"),
        ("AVX512_CORE_VNNI", "cpu-avx512-vnni"),
        ("AVX512_CORE_BF16", "cpu-avx512-bf16"),
        ("DEFAULT", "cpu-avx512-bf16"),
    ],
)
def test_the_onednn_isa_cap_lowers_the_class_and_says_so(
    tmp_path, monkeypatch: pytest.MonkeyPatch, cap: str, expected: str
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ZEN4 + "cpu family\t: 25\nmodel\t\t: 17\n")
    monkeypatch.setenv(ISA_CAP_ENV, cap)
    cpu = real_cpu(cpuinfo)
    assert cpu.cls == expected and cpu.generation == "Zen 4"  # the machine is still a Zen 4
    assert cpu.isa_cap == ("" if cap == "DEFAULT" else cap.upper())
    if cap == "AVX2":
        assert not cpu.vnni and not cpu.native_bf16
        line = Host(cpu=cpu).describe()
        assert "kernels capped at AVX2 by ONEDNN_MAX_CPU_ISA on a Zen 4" in line
        assert "ONNX Runtime ignores the cap" in line


def test_an_injected_class_is_uncapped_whatever_this_machine_is() -> None:
    from dataclasses import replace

    real = Host.for_class("cpu-avx512-bf16")
    capped = replace(real, cpu=replace(real.cpu, isa_cap="AVX2"))
    injected = Host.for_class("cpu-avx512-vnni", capped)
    assert injected.cpu.isa_cap == "" and injected.cls == "cpu-avx512-vnni"


def test_an_unknown_isa_cap_is_an_error_not_a_silent_full_isa() -> None:
    assert isa_cap({}) == "" and isa_cap({ISA_CAP_ENV: " avx2 "}) == "AVX2"
    assert set(ISA_CAPS) >= {"AVX2", "AVX512_CORE_BF16", "AVX10_1_512_AMX"}
    with pytest.raises(InputError, match=r"ONEDNN_MAX_CPU_ISA='AVX3': unknown ISA level"):
        isa_cap({ISA_CAP_ENV: "avx3"})


def test_store_keys_follow_the_isa_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from arcface_lab.store import device_fingerprint

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delenv(ISA_CAP_ENV, raising=False)
    full = device_fingerprint()
    monkeypatch.setenv(ISA_CAP_ENV, "SSE41")
    capped = device_fingerprint()
    assert set(capped["isa"]) <= {"sse4_1", "sse4_2"}
    assert capped != full or set(full["isa"]) <= {"sse4_1", "sse4_2"}


def test_devices_are_only_what_the_machine_has() -> None:
    cpu_only, one_gpu = Host.for_class("cpu-avx2"), Host.for_class("gpu-sm90")
    assert cpu_only.check_device("cpu") == "cpu"
    with pytest.raises(
        InputError, match=r"^device 'cuda': this machine has no CUDA GPU \(use cpu\)$"
    ):
        cpu_only.check_device("cuda")
    with pytest.raises(InputError, match=r"^device 'gpu0': expected cpu, cuda or cuda:N$"):
        one_gpu.check_device("gpu0")
    assert one_gpu.check_device("cuda") == "cuda" and one_gpu.check_device("cuda:0") == "cuda:0"
    with pytest.raises(InputError, match=r"has 1 CUDA GPU\(s\), cuda:0..cuda:0$"):
        one_gpu.check_device("cuda:1")
