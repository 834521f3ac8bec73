"""The frontier picture: candidates as points (speedup with its interval against 1 - worst
held-out cosine), on the report's first screen and in notebook 03."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

from arcface_lab.report.figures import FLOOR, frontier_png, frontier_points
from arcface_lab.report.html import render

ROOT = Path(__file__).resolve().parents[1]


def _candidate(label: str, status: str, speedup: float | None, cos: float | None) -> dict:
    return {
        "label": label,
        "precision": label.split("/")[1],
        "status": status,
        "speedup_vs_reference": speedup,
        "speedup_ci": None if speedup is None else [0.9 * speedup, 1.1 * speedup],
        "held_out_cosine_min": cos,
    }


OPTIMIZED = {
    "batch_size": 32,
    "candidates": [
        _candidate("ncnn/fp32", "chosen", 1.8, 1.0),
        _candidate("openvino/int8", "failed_gate", 2.4, 0.96),
        _candidate("openvino/bf16", "not_native", None, None),
    ],
}


def test_points_are_the_candidates_that_ran_with_exact_agreement_drawn_at_the_floor() -> None:
    points = frontier_points(OPTIMIZED)
    assert [p["label"] for p in points] == ["ncnn/fp32", "openvino/int8"]
    assert points[0]["error"] == FLOOR and abs(points[1]["error"] - 0.04) < 1e-12
    assert points[0]["ci"] == [0.9 * 1.8, 1.1 * 1.8]


def test_the_figure_is_a_png_and_nothing_without_a_point() -> None:
    png = frontier_png(OPTIMIZED, {"fp32": 0.99999, "int8": 0.999}, 1.6, "(cpu-avx2)")
    assert png is not None and base64.b64decode(png).startswith(b"\x89PNG")
    assert frontier_png({"candidates": OPTIMIZED["candidates"][2:]}, {}) is None


def test_the_report_shows_it_on_its_first_screen(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ROOT / "reports" / "reference" / "cpu-amx-default", run)
    page = render(run).read_text()
    figure = page.index('<figure class="frontier">')
    assert page.index("model sha256") < figure < page.index("<h2>Optimize on")
    data = re.search(r'class="frontier"><img alt="[^"]+" src="data:image/png;base64,([^"]+)"', page)
    assert data and base64.b64decode(data.group(1)).startswith(b"\x89PNG")
