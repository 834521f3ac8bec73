"""The host probe: what this machine is, and the hardware class that decides what runs natively.

The only reader of ``/proc/cpuinfo`` in arcface_lab. :func:`probe` returns a
:class:`Host`: the CPU (model, the ISA flags inference libraries choose kernels
by, cores, the threads this process may use, memory), the CUDA GPUs torch sees
(name, compute capability, memory, driver) and library versions. Its ``cls`` is
the machine's class, the key under which params state speed targets:

=====================  ====================================================
``cpu-amx``            AMX tiles (BF16 and INT8 matrix units)
``cpu-avx512-bf16``    AVX-512 with native BF16 (Zen 4, Cooper Lake)
``cpu-avx512-vnni``    AVX-512 with VNNI, no BF16 (Cascade Lake, Ice Lake)
``cpu-avx512``         AVX-512 without VNNI (Skylake-SP)
``cpu-avx2-vnni``      AVX2 with AVX-VNNI, no AVX-512 (Alder Lake)
``cpu-avx2``           AVX2 and FMA only (Zen 3, Haswell)
``cpu-baseline``       none of the above
``gpu-smXY``           a CUDA GPU of compute capability X.Y (``gpu-sm90``: H100/H200)
=====================  ====================================================

A class can be injected (``ARCFACE_LAB_HOST_CLASS=cpu-avx2``, or
:meth:`Host.for_class` in a test), so every decision that depends on the
hardware can be exercised on any machine; the injected host has that class's
representative flags and says it was injected. Store keys use what the
machine really is (:func:`real_cpu`), never an injected class.

The kernels themselves can be capped too: oneDNN, inside OpenVINO's CPU plugin
and torch, dispatches no instruction above ``ONEDNN_MAX_CPU_ISA`` (``AVX2``:
no AVX-512, no VNNI, no BF16), and torch's own kernels none above
``ATEN_CPU_CAPABILITY``. Where the cap is set the probe drops the flags above it,
so the class is the one the kernels really run as (``cpu-avx2`` on a Zen 4 or
Zen 5), and says so: ``Cpu.isa_cap`` names the cap, and the CPU's generation is
still the real one. It measures what the machine can do at that ISA, not a
Zen 3's clocks and caches, and ONNX Runtime's MLAS kernels ignore the cap.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from arcface_lab.errors import InputError

__all__ = [
    "CLASS_ENV",
    "CPU_CLASSES",
    "ISA_CAPS",
    "ISA_CAP_ENV",
    "Cpu",
    "Gpu",
    "Host",
    "cpu_class",
    "cpu_generation",
    "isa_cap",
    "parse_cpuinfo",
    "probe",
    "real_cpu",
    "reset_rss_high_water",
    "rss_high_water_mb",
]

#: Environment variable that injects a hardware class (tests, what-if planning).
CLASS_ENV = "ARCFACE_LAB_HOST_CLASS"

#: ISA flags that change which kernels an inference library picks (x86 and Arm).
INFERENCE_FLAGS = frozenset(
    {
        *("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx_vnni_int8"),
        *("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512_vnni"),
        *("avx512_bf16", "avx512_fp16", "avx512ifma", "avx512vbmi"),
        *("amx_tile", "amx_bf16", "amx_int8", "amx_fp16"),
        *("asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16"),
    }
)

_AVX2 = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c")
_AVX512 = (*_AVX2, "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")
#: Each CPU class with the flags a machine of that class has (what an injected host gets).
CPU_CLASSES: dict[str, frozenset[str]] = {
    "cpu-amx": frozenset(
        (*_AVX512, "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    ),
    "cpu-avx512-bf16": frozenset((*_AVX512, "avx512_vnni", "avx512_bf16")),
    "cpu-avx512-vnni": frozenset((*_AVX512, "avx512_vnni")),
    "cpu-avx512": frozenset(_AVX512),
    "cpu-avx2-vnni": frozenset((*_AVX2, "avx_vnni")),
    "cpu-avx2": frozenset(_AVX2),
    "cpu-baseline": frozenset({"sse4_1", "sse4_2"}),
}

#: oneDNN's own variable (OpenVINO's CPU plugin and torch read it); the probe honours it.
ISA_CAP_ENV = "ONEDNN_MAX_CPU_ISA"
_TORCH_CAP_ENV = "ATEN_CPU_CAPABILITY"
_AMX = ("amx_tile", "amx_bf16", "amx_int8")
#: Each ``ONEDNN_MAX_CPU_ISA`` level with the flags its kernels may use (DEFAULT: all).
ISA_CAPS: dict[str, frozenset[str]] = {
    "SSE41": frozenset({"sse4_1", "sse4_2"}),
    "AVX": frozenset({"sse4_1", "sse4_2", "avx"}),
    "AVX2": frozenset(_AVX2),
    "AVX2_VNNI": frozenset((*_AVX2, "avx_vnni")),
    "AVX2_VNNI_2": frozenset((*_AVX2, "avx_vnni", "avx_vnni_int8")),
    "AVX512_CORE": frozenset(_AVX512),
    "AVX512_CORE_VNNI": frozenset((*_AVX512, "avx_vnni", "avx512_vnni")),
    "AVX512_CORE_BF16": frozenset((*_AVX512, "avx_vnni", "avx512_vnni", "avx512_bf16")),
    "AVX512_CORE_FP16": frozenset(
        (*_AVX512, "avx_vnni", "avx512_vnni", "avx512_bf16", "avx512_fp16")
    ),
    "AVX512_CORE_AMX": frozenset((*_AVX512, "avx_vnni", "avx512_vnni", "avx512_bf16", *_AMX)),
}
ISA_CAPS["AVX10_1_512"] = ISA_CAPS["AVX512_CORE_FP16"]
ISA_CAPS["AVX10_1_512_AMX"] = ISA_CAPS["AVX512_CORE_AMX"] | {"avx512_fp16"}


def isa_cap(environ: Any = None) -> str:
    """The ``ONEDNN_MAX_CPU_ISA`` level set for this process, upper case; "" when none.

    Raises:
        InputError: the variable names no level oneDNN knows (oneDNN would ignore it
            silently and run every kernel the CPU has).
    """
    value = (os.environ if environ is None else environ).get(ISA_CAP_ENV, "").strip().upper()
    if value in ("", "ALL", "DEFAULT"):
        return ""
    if value not in ISA_CAPS:
        known = ", ".join([*ISA_CAPS, "DEFAULT"])
        raise InputError(f"{ISA_CAP_ENV}={value!r}: unknown ISA level; expected one of {known}")
    return value


_GPU_CLASS_RE = re.compile(r"^gpu-sm(\d)(\d+)$")
_DEVICE_RE = re.compile(r"^(?:cpu|cuda(?::(\d+))?)$")


def cpu_class(flags: frozenset[str] | set[str]) -> str:
    """The class of a CPU with ``flags`` (see the module docstring)."""
    if flags & {"amx_bf16", "amx_int8"}:
        return "cpu-amx"
    if "avx512f" in flags:
        if "avx512_bf16" in flags:
            return "cpu-avx512-bf16"
        return "cpu-avx512-vnni" if "avx512_vnni" in flags else "cpu-avx512"
    if "avx2" in flags:
        return "cpu-avx2-vnni" if "avx_vnni" in flags else "cpu-avx2"
    return "cpu-baseline"


@dataclass(frozen=True)
class Cpu:
    """The CPU as inference libraries see it."""

    model: str
    vendor: str
    flags: frozenset[str]
    cores: int
    threads: int
    memory_mb: int | None = None
    #: The microarchitecture its family and model name ("Zen 4"), "" where not known.
    generation: str = ""
    #: The ``ONEDNN_MAX_CPU_ISA`` level ``flags`` were capped at, "" when not capped.
    isa_cap: str = ""

    @property
    def cls(self) -> str:
        return cpu_class(self.flags)

    @property
    def native_bf16(self) -> bool:
        """BF16 arithmetic in hardware (AVX512_BF16 or AMX); elsewhere it is emulated."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def vnni(self) -> bool:
        """An INT8 dot product without 16-bit saturation (VNNI or AMX)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as torch sees it."""

    index: int
    name: str
    capability: tuple[int, int]
    memory_mb: int | None = None
    driver: str | None = None

    @property
    def cls(self) -> str:
        return f"gpu-sm{self.capability[0]}{self.capability[1]}"


@dataclass(frozen=True)
class Host:
    """This machine: CPU, GPUs, library versions, and its class."""

    cpu: Cpu
    gpus: tuple[Gpu, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    injected: str | None = None

    @property
    def cls(self) -> str:
        """The class speed targets are keyed by: the first GPU's when there is one."""
        return self.gpus[0].cls if self.gpus else self.cpu.cls

    @property
    def device(self) -> str:
        """Where optimize runs its candidates: ``cuda`` on a GPU machine, else ``cpu``."""
        return "cuda" if self.gpus else "cpu"

    def check_device(self, device: str) -> str:
        """``device`` if this host has it (``cpu``, ``cuda``, ``cuda:N``), else an InputError.

        ``cuda`` on a machine without a CUDA GPU is an error, never a silent CPU run.
        """
        match = _DEVICE_RE.match(device)
        if match is None:
            raise InputError(f"device {device!r}: expected cpu, cuda or cuda:N")
        if device == "cpu":
            return device
        if not self.gpus:
            raise InputError(f"device {device!r}: this machine has no CUDA GPU (use cpu)")
        index = int(match[1] or 0)
        if index >= len(self.gpus):
            raise InputError(
                f"device {device!r}: this machine has {len(self.gpus)} CUDA GPU(s), "
                f"cuda:0..cuda:{len(self.gpus) - 1}"
            )
        return device

    def describe(self) -> str:
        """One line: class, CPU or GPU, cores and the flags that decide precisions."""
        flags = " ".join(sorted(self.cpu.flags & _SHOWN_FLAGS)) or "none"
        text = f"{self.cls}: {self.cpu.model}, {self.cpu.cores} cores ({flags})"
        if self.gpus:
            g = self.gpus[0]
            text += f"; GPU {g.name} (sm {g.capability[0]}.{g.capability[1]})"
        if self.cpu.isa_cap:
            torch_cap = os.environ.get(_TORCH_CAP_ENV, "") or "not set"
            text += (
                f" [kernels capped at {self.cpu.isa_cap} by {ISA_CAP_ENV} on a "
                f"{self.cpu.generation or 'CPU'} with more; {_TORCH_CAP_ENV} {torch_cap}; "
                "ONNX Runtime ignores the cap]"
            )
        return text + (f" [injected via {CLASS_ENV}]" if self.injected else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.cls,
            "cpu_class": self.cpu.cls,
            "injected": self.injected,
            "cpu": {**asdict(self.cpu), "flags": sorted(self.cpu.flags)},
            "gpus": [{**asdict(g), "class": g.cls} for g in self.gpus],
            "versions": dict(self.versions),
        }

    @classmethod
    def for_class(cls, name: str, base: Host | None = None) -> Host:
        """A host of class ``name`` (``cpu-avx2``, ``gpu-sm90``, ...), the rest from ``base``.

        A CPU class replaces the CPU flags with that class's and drops the GPUs; a GPU
        class keeps the CPU and stands in one GPU of that compute capability.
        """
        base = base or _probe_real()
        if name in CPU_CLASSES:
            # a machine of that class, uncapped: the cap is this machine's, not the class's
            cpu = replace(base.cpu, flags=CPU_CLASSES[name], isa_cap="")
            return replace(base, cpu=cpu, gpus=(), injected=name)
        match = _GPU_CLASS_RE.match(name)
        if match:
            gpu = Gpu(0, f"injected {name}", (int(match[1]), int(match[2])))
            return replace(base, gpus=(gpu,), injected=name)
        known = ", ".join([*CPU_CLASSES, "gpu-smXY"])
        raise InputError(f"hardware class {name!r}: unknown; expected one of {known}")


_SHOWN_FLAGS = frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16"}
    | {"amx_bf16", "amx_int8"}
)


def parse_cpuinfo(text: str) -> tuple[str, str, frozenset[str]]:
    """``(model name, vendor, inference flags)`` from the text of ``/proc/cpuinfo``."""
    model = vendor = ""
    flags: set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif name in ("vendor_id", "cpu implementer") and not vendor:
            vendor = value.strip()
        elif name in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, vendor, frozenset(flags & INFERENCE_FLAGS)


#: AMD family 0x19 model ranges (first, last) of Zen 4; the rest of the family is Zen 3.
_ZEN4_MODELS = ((0x10, 0x1F), (0x60, 0x7F), (0xA0, 0xAF))


def cpu_generation(text: str) -> str:
    """The AMD microarchitecture ``/proc/cpuinfo``'s family and model name, or "".

    Virtual machines often hide the model name ("AMD EPYC"); family and model still say
    whether it is a Zen 3 (AVX2 only) or a Zen 4 (AVX-512), so the report can say it too.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    if fields.get("vendor_id") != "AuthenticAMD":
        return ""
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return ""
    if family == 0x17:
        return "Zen 2" if model >= 0x30 else "Zen / Zen+"
    if family == 0x19:
        zen4 = any(lo <= model <= hi for lo, hi in _ZEN4_MODELS)
        return "Zen 4" if zen4 else "Zen 3"
    if family == 0x1A:
        return "Zen 5"
    return ""


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_high_water_mb() -> float | None:
    """This process's resident-set high-water mark (MiB), or None where Linux cannot say.

    ``VmHWM`` of ``/proc/self/status``: unlike ``getrusage``'s ``ru_maxrss``, it starts
    afresh in a new program, so a child started from a large parent reports its own peak.
    It is reset by writing 5 to ``/proc/self/clear_refs``.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_rss_high_water() -> bool:
    """Reset this process's resident-set high-water mark (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _threads() -> int:
    """Threads this process may use: ``OMP_NUM_THREADS`` if set, else the CPUs it may run on."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(int(omp), usable) if omp.isdigit() and int(omp) > 0 else usable


def real_cpu(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> Cpu:
    """The CPU this process really runs on (never an injected class), at its ISA cap if set."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    model, vendor, flags = parse_cpuinfo(text)
    cap = isa_cap()
    if cap:
        flags = flags & ISA_CAPS[cap]
    return Cpu(
        model=model or platform.processor() or platform.machine(),
        vendor=vendor,
        flags=flags,
        cores=os.cpu_count() or 1,
        threads=_threads(),
        memory_mb=_memory_mb(),
        generation=cpu_generation(text),
        isa_cap=cap,
    )


def _gpus() -> tuple[Gpu, ...]:
    """CUDA devices through torch, where torch is installed and sees one."""
    try:
        import torch
    except (ImportError, OSError):
        return ()
    try:
        if not torch.cuda.is_available():
            return ()
        count = torch.cuda.device_count()
    except Exception:  # a broken driver is no GPU
        return ()
    driver = gpu_driver_version() if count else None
    gpus = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        gpus.append(
            Gpu(
                index=i,
                name=torch.cuda.get_device_name(i),
                capability=tuple(torch.cuda.get_device_capability(i)),  # type: ignore[arg-type]
                memory_mb=int(props.total_memory // 2**20),
                driver=driver,
            )
        )
    return tuple(gpus)


def gpu_driver_version() -> str | None:
    """The NVIDIA driver version (NVML, else ``nvidia-smi``); None where neither answers."""
    import shutil
    import subprocess

    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no pynvml, no driver, or not permitted: try the command line
        pass
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


_VERSIONED = (
    "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf",
    "tensorrt", "onnxconverter-common",
)  # fmt: skip


def library_versions() -> dict[str, str]:
    """Versions of Python, arcface_lab and the inference libraries that are installed."""
    from importlib.metadata import PackageNotFoundError, version

    from arcface_lab.core.version import __version__

    out = {"python": platform.python_version(), "arcface_lab": __version__}
    for dist in _VERSIONED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def _probe_real() -> Host:
    return Host(cpu=real_cpu(), gpus=_gpus(), versions=library_versions())


def probe() -> Host:
    """This machine (probed once per process), or the class ``ARCFACE_LAB_HOST_CLASS`` injects."""
    injected = os.environ.get(CLASS_ENV, "").strip()
    if injected:
        return Host.for_class(injected, _probe_real())
    return _probe_real()


def die_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    """Linux: a child (a bench worker, a model converter) gets SIGKILL when the process
    that started it dies, even by SIGKILL; pass it as ``preexec_fn``."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
