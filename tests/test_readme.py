"""The README's Python example runs as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_python_example_runs_as_written(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fresh folder holding the repository's params/, as a user who cloned it would."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir))
    (tmp_path / "params").symlink_to(ROOT / "params")
    monkeypatch.chdir(tmp_path)
    (block,) = _python_blocks("Python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md (Python)", "exec"), {"__name__": "readme"})
    printed = out.getvalue()
    assert "engine     onnxruntime/fp32 on cpu" in printed
    cos = float(re.search(r"cosine min ([0-9.]+)", printed)[1])  # type: ignore[index]
    assert cos > 0.99999
    assert (tmp_path / "opt" / "optimize.json").is_file()
    assert re.search(r"^(onnxruntime|torch)/fp32$", printed.splitlines()[-1])
