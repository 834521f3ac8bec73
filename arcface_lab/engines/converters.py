"""Running a third-party model converter (pnnx for ncnn, MNN's converter) on the canonical ONNX.

Each step is small and separate, so the ncnn and MNN backends share them:

- :func:`onnx_for_converter`: a copy of the model a converter can read (its IR version
  lowered to the one its opsets need: pnnx's bundled ONNX Runtime reads IR <= 13, and
  ``onnx`` 1.23 writes 14, on which pnnx crashes without a word);
- :func:`run_converter`: the converter in its own process group, with a timeout past
  which the whole group is killed, and killed too when the process that started it dies
  (a bench worker stopped by optimize's budget leaves no converter running); its output
  is kept for the error message;
- :class:`~arcface_lab.errors.ConversionError`: what a converter could not take, naming
  the model and the operators.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arcface_lab.config.fields import Ctx, option, parse_float, parse_int
from arcface_lab.core.host import die_with_parent
from arcface_lab.errors import ConversionError

__all__ = [
    "convert_timeout_option",
    "onnx_for_converter",
    "run_converter",
    "threads_option",
    "unsupported",
]

#: The last characters of a converter's output kept in an error message.
_TAIL = 600


def _timeout(value: object, ctx: Ctx) -> float:
    return parse_float(value, ctx, lo=1.0)


def convert_timeout_option() -> Any:
    """The ``convert_timeout_s`` option of a backend that converts the model (600 s)."""
    return option(600.0, _timeout, "seconds the converter may take")


def threads_option(setting: str) -> Any:
    """The ``threads`` option of a CPU runtime whose thread count is ``setting``."""
    return option(0, parse_int, f"{setting} (0: the cores this process may use)")


def onnx_for_converter(source: Path, dest: Path) -> Path:
    """``source`` copied to ``dest`` with the lowest IR version its opsets need.

    The IR version only says which file-format features a model may use; a model that
    uses none above its opsets' minimum reads the same at that version.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(source))
    lowest = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = min(model.ir_version, lowest)
    onnx.save(model, str(dest))
    return dest


def run_converter(
    cmd: Sequence[str], cwd: Path, timeout_s: float, what: str, env: dict[str, str] | None = None
) -> str:
    """Run ``cmd`` in ``cwd``; its combined output, or :class:`ConversionError` naming ``what``.

    The converter runs in a new session; past ``timeout_s`` its whole process group is
    killed, so no child of it outlives the build.
    """
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,
        env=env,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise ConversionError(
            f"{what}: the converter did not finish in {timeout_s:.0f} s and was stopped"
        ) from None
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    if proc.returncode != 0:
        how = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        raise ConversionError(f"{what}: the converter {how}: ...{out.strip()[-_TAIL:]}")
    return out


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def unsupported(what: str, operators: Sequence[str], converter: str) -> ConversionError:
    """The error for a model with operators ``converter`` or its runtime cannot run."""
    names = ", ".join(sorted(set(operators)))
    return ConversionError(
        f"{what}: operator(s) {names} cannot run on {converter}; "
        "the other backends of the chain can still run this model",
        operators=sorted(set(operators)),
    )
