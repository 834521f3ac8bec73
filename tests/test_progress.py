"""Progress says what a worker is waiting on: the phase file, and the lines optimize prints."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from arcface_lab.core.progress import PROGRESS_ENV, read_phase, report_phase
from arcface_lab.measure.optimize import _Progress, _wait


def test_a_phase_is_written_only_when_asked_and_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phase = tmp_path / "phase.txt"
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    report_phase("int8 calibration on 64 faces")
    assert not phase.exists() and read_phase(phase) == "" and read_phase(None) == ""
    monkeypatch.setenv(PROGRESS_ENV, str(phase))
    report_phase("int8 sensitivity: quantizer 3 of 40 alone\nsecond line dropped")
    assert read_phase(phase) == "int8 sensitivity: quantizer 3 of 40 alone"


def test_plain_progress_prints_the_phase_it_waits_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No bar (a log, a notebook without widgets): one line per phase change, at most one
    every PHASE_EVERY_S, so a quarter-hour search is not one silent line."""
    phase = tmp_path / "phase.txt"
    phase.write_text("left over from the last candidate")
    monkeypatch.setenv(PROGRESS_ENV, str(phase))

    def search() -> int:
        report_phase("int8 calibration on 64 faces")
        time.sleep(1.4)
        report_phase("int8 sensitivity: quantizer 1 of 40 alone")  # within 20 s: not printed
        time.sleep(1.2)
        return 7

    import arcface_lab.measure.optimize as optimize_module

    # pytest's nbval plugin loads ipykernel, which would choose the widget bar: plain lines
    monkeypatch.setattr(optimize_module, "_bar_kind", lambda: None)
    progress = _Progress(1, enabled=True)
    assert _wait(search, "openvino/int8", progress, phase) == 7
    err = capsys.readouterr().err
    assert "[1/1] openvino/int8 ..." in err
    assert "s: int8 calibration on 64 faces" in err
    assert "left over" not in err and "quantizer 1 of 40" not in err
