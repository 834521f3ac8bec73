"""The one threshold check: gates per precision, the class speed target, n/a rows, the verdict."""

from __future__ import annotations

import math

from arcface_lab.config.params import SpeedTarget, Thresholds
from arcface_lab.measure.acceptance import (
    format_checks,
    gate_checks,
    speed_check,
    verdict_passed,
)

GATES = Thresholds(
    cosine_min={"fp16": 0.999},
    accuracy_delta_max={"fp16": 0.001},
    decision_flips_max=0,
    speed_targets={"cpu-avx2": SpeedTarget(2.0, "INT8 floor about 2.7x")},
)


def _row(checks: list, metric: str):
    return next(c for c in checks if c.metric == metric)


def test_gates_pass_and_fail_on_their_own_numbers() -> None:
    measured = {
        "drift": {"min": 0.9995},
        "held_out": {"min": 0.9985},
        "verification": {"accuracy_delta": -0.002, "decision_flips": 0},
    }
    checks = gate_checks("fp16", measured, GATES)
    assert [c.metric for c in checks] == [
        "fp16 cosine min",
        "fp16 held-out cosine min",
        "fp16 |accuracy delta|",
        "fp16 decision flips",
    ]
    assert [c.status for c in checks] == ["pass", "FAIL", "FAIL", "pass"]
    assert _row(checks, "fp16 |accuracy delta|").measured == 0.002
    assert not verdict_passed(checks)


def test_nan_and_missing_measurements_fail() -> None:
    checks = gate_checks("fp16", {"drift": {"min": math.nan}, "verification": {}}, GATES)
    assert _row(checks, "fp16 cosine min").status == "FAIL"
    missing = _row(checks, "fp16 |accuracy delta|")
    assert missing.status == "FAIL" and missing.note == "not measured"


def test_an_engine_that_did_not_run_fails_every_gate_with_the_reason() -> None:
    checks = gate_checks("fp16", {"unavailable": "no GPU"}, GATES)
    assert checks and all(c.status == "FAIL" and c.note == "no GPU" for c in checks)


def test_speed_target_by_class_and_n_a_without_one() -> None:
    ok = speed_check("openvino/int8", 2.4, 32, "cpu-avx2", GATES)
    assert ok.status == "pass" and ok.floor == "INT8 floor about 2.7x" and ok.target == ">= 2"
    slow = speed_check("openvino/int8", 1.6, 32, "cpu-avx2", GATES)
    assert slow.status == "FAIL"
    other = speed_check("openvino/bf16", 3.1, 32, "cpu-amx", GATES)
    assert other.status == "n/a" and "no speed target for cpu-amx" in other.note
    assert "measured 3.10x" in other.note


def test_verdict_needs_one_applicable_check_and_counts_n_a_neither_way() -> None:
    na = speed_check("torch/fp32", None, 32, "cpu-amx", GATES)
    assert not verdict_passed([na])
    passed = gate_checks("fp16", {"drift": {"min": 1.0}}, GATES)[:1]
    assert verdict_passed([*passed, na])
    text = format_checks([*passed, na])
    assert "PASS" in text and "n/a" in text


def test_a_speed_check_whose_interval_holds_the_target_says_so_and_judges_the_median() -> None:
    close = speed_check("ncnn/fp32", 2.03, 32, "cpu-avx2", GATES, interval=(1.95, 2.11))
    assert close.status == "pass"
    assert "95 % interval [1.95, 2.11], which contains the target 2: judged on the median" in (
        close.note
    )
    below = speed_check("ncnn/fp32", 1.97, 32, "cpu-avx2", GATES, interval=(1.90, 2.04))
    assert below.status == "FAIL" and "contains the target 2" in below.note
    clear = speed_check("ncnn/fp32", 2.4, 32, "cpu-avx2", GATES, interval=(2.3, 2.5))
    assert clear.status == "pass" and "[2.30, 2.50]" in clear.note
    assert "contains" not in clear.note
