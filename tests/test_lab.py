"""`make lab` starts where researchers run it, root included, and serves the notebooks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_make_lab_starts_prints_its_url_and_lists_the_notebooks(tmp_path: Path) -> None:
    if not (ROOT / ".venv" / "bin" / "jupyter").exists():
        pytest.skip("no .venv with JupyterLab: make lab sets it up first")
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS=--port={port} --no-browser"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab\?token=(\w+)", line)
            url = found and found.group(1)
        assert url, "".join(lines)[-3000:]
        if os.geteuid() == 0:
            assert any("started with --allow-root" in line for line in lines)
        # The banner can come a moment before the socket listens: ask again for a while.
        api = f"http://127.0.0.1:{port}/api/contents?token={url}"
        names: set[str] = set()
        while not names:
            try:
                with urllib.request.urlopen(api, timeout=30) as reply:
                    names = {item["name"] for item in json.load(reply)["content"]}
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert "01_build_engines.ipynb" in names and "04_acceptance_report.ipynb" in names
        with pytest.raises(urllib.error.HTTPError):  # the token guards it
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents", timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
