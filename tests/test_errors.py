"""Errors keep their class, and so their exit code, across the worker boundary."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from arcface_lab import errors
from arcface_lab.core.preprocess import Preprocess
from arcface_lab.data.images import synthetic_faces
from arcface_lab.errors import (
    ArcfaceLabError,
    BackendUnavailable,
    DataError,
    EngineError,
    InputError,
    NotebookError,
    error_from_record,
    error_record,
)
from arcface_lab.measure.bench import BenchSpec, run_worker


@pytest.mark.parametrize("cls", [DataError, BackendUnavailable, EngineError, errors.ParamsError])
def test_a_record_raises_its_own_class_again(cls: type[ArcfaceLabError]) -> None:
    back = error_from_record(error_record(cls("r18.onnx: bad")))
    assert type(back) is cls and str(back) == "r18.onnx: bad"
    assert back.exit_code == cls.exit_code


def test_an_unknown_class_keeps_its_exit_code() -> None:
    assert type(error_from_record({"type": "PluginInputError", "exit_code": 2})) is InputError
    assert type(error_from_record({"type": "PluginError", "exit_code": 1})) is EngineError


def test_every_error_class_is_in_errors_py() -> None:
    """No module defines its own error class; each one is importable from errors."""
    import arcface_lab.cli  # (loads every wing)
    import arcface_lab.runs.pipeline  # noqa: F401

    pending, seen = [ArcfaceLabError], set()
    while pending:
        cls = pending.pop()
        seen.add(cls)
        pending.extend(cls.__subclasses__())
    outside = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in seen if c.__module__ != errors.__name__
    )
    assert not outside
    assert {c.__name__ for c in seen} <= set(errors.__all__)
    assert NotebookError in seen


def test_bad_input_inside_the_worker_stays_input_error(tmp_path: Path) -> None:
    """An unknown engine option is bad input (exit 2), not an engine failure (exit 1)."""
    images = tmp_path / "faces.npy"
    np.save(images, synthetic_faces(2, seed=0))
    spec = BenchSpec(
        model="seeded:r18",
        backend="torch",
        precision="fp32",
        batch_sizes=(2,),
        images=str(images),
        preprocess=Preprocess().to_dict(),
        options={"no_such_option": 1},
        store={"local": str(tmp_path / "store")},
    )
    with pytest.raises(InputError, match="no_such_option") as caught:
        run_worker(spec, timeout_s=300)
    assert caught.value.exit_code == 2


def test_library_errors_name_the_argument_and_the_cli_shows_the_flag() -> None:
    from arcface_lab.cli import FLAGS, main
    from arcface_lab.models.source import resolve_model

    with pytest.raises(InputError) as caught:
        resolve_model("seeded:r9")
    assert str(caught.value).startswith("model seeded:r9: unknown architecture")
    assert caught.value.argument == "model"
    assert caught.value.for_flags(FLAGS).startswith("--model seeded:r9: unknown architecture")
    assert InputError("plain").for_flags(FLAGS) == "plain"
    assert main(["embed", "--model", "seeded:r9", "--input", "synthetic:2", "--out", "x.npy"]) == 2


def _worker_pids(folder: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"arcface_lab.measure.bench" in cmd and str(folder).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def _wait_for(predicate, seconds: float = 120.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_a_killed_run_leaves_no_worker_and_its_folder_is_swept(tmp_path: Path) -> None:
    """SIGKILL of the process that started a worker: the worker dies too; the folder goes."""
    import signal
    import subprocess
    import sys
    import tempfile

    from arcface_lab.measure.bench import WORKER_PREFIX, sweep_worker_folders

    images = tmp_path / "faces.npy"
    np.save(images, synthetic_faces(2, seed=0))
    script = (
        "from arcface_lab.measure.bench import BenchSpec, run_worker\n"
        "from arcface_lab.core.preprocess import Preprocess\n"
        f"run_worker(BenchSpec(model='seeded:r18', backend='torch', precision='fp32', "
        f"batch_sizes=(2,), images={str(images)!r}, preprocess=Preprocess().to_dict(), "
        f"warmup_s=600, budget_s=600, store={{'local': {str(tmp_path / 'store')!r}}}))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    root = Path(tempfile.gettempdir())
    folders: list[Path] = []
    try:
        assert _wait_for(
            lambda: bool(folders.extend(root.glob(f"{WORKER_PREFIX}{parent.pid}-*")) or folders)
            and bool(_worker_pids(folders[0]))
        ), "the worker never started"
        [worker] = _worker_pids(folders[0])
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker))
    finally:
        parent.kill()
    assert folders[0] in sweep_worker_folders() and not folders[0].exists()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize(
    ("flag", "target", "message"),
    [
        ("--out", "folder", "argument --out: {p} is a folder; expected the path of a file"),
        ("--local-store", "file", "argument --local-store: {p} is a file; expected a folder"),
    ],
)
def test_output_and_store_paths_are_checked_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, target: str, message: str
) -> None:
    from arcface_lab.cli import main

    path = tmp_path / (f"{target}.npy" if flag == "--out" else target)
    if target == "folder":
        path.mkdir()
    else:
        path.write_text("not a store")
    out = str(path) if flag == "--out" else str(tmp_path / "e.npy")
    argv = ["embed", "--model", "seeded:r18", "--input", "synthetic:2", "--out", out]
    if flag == "--local-store":
        argv += ["--local-store", str(path)]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert message.format(p=path) in capsys.readouterr().err


@pytest.mark.parametrize("where", ["locked", "proc"])
def test_an_output_in_a_read_only_folder_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Refused by the parser (exit 2, one line), for a 0555 folder and for /proc, where
    even root cannot create a file (permission bits alone let root through)."""
    from arcface_lab.cli import main

    if where == "locked":
        if os.geteuid() == 0:
            pytest.skip("root may write in a 0555 folder; the /proc case covers root")
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o555)
    else:
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        folder = Path("/proc")
    out = folder / "not-there" / "e.npy"
    with pytest.raises(SystemExit) as stopped:
        main(["embed", "--model", "seeded:r18", "--input", "synthetic:2", "--out", str(out)])
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert f"argument --out: {out}: cannot write in {folder} (" in line, line


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_sigterm_of_a_run_leaves_a_failed_folder_and_no_partial(tmp_path: Path) -> None:
    """SIGTERM unwinds the run: exit 143, '<run>.failed' kept, no '.partial', no worker."""
    import signal
    import subprocess
    import sys
    import tempfile

    from arcface_lab.measure.bench import WORKER_PREFIX

    params = tmp_path / "slow.yaml"
    params.write_text(
        "model: {spec: seeded:r18}\n"
        "backends: {chain: [torch], reference: torch, precisions: [fp32], batch_size: 4}\n"
        "data: {images: synthetic:8, held_out: synthetic:8, pairs: synthetic:20}\n"
        "bench: {batch_sizes: [4], warmup_s: 600, budget_s: 600, min_repeats: 3}\n"
    )
    out = tmp_path / "run"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    argv = [sys.executable, "-m", "arcface_lab", "run", str(params), "--out", str(out)]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    root = Path(tempfile.gettempdir())
    workers: list[Path] = []
    try:
        assert _wait_for(
            lambda: bool(workers.extend(root.glob(f"{WORKER_PREFIX}{proc.pid}-*")) or workers)
            and bool(_worker_pids(workers[0]))
        ), "the run never started its bench worker"
        [worker] = _worker_pids(workers[0])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "arcface-lab run: terminated (SIGTERM)", err
    assert not out.with_name(".run.partial").exists() and not out.exists()
    assert (out.with_name("run.failed") / "index.html").is_file()
    assert _wait_for(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker))
    assert not workers[0].exists()


def test_a_worker_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    """A grandchild holding the worker's pipes (a compiler, a pool) cannot stall the run."""
    import sys
    import threading

    from arcface_lab.errors import EngineError, WorkerTimeout
    from arcface_lab.measure.bench import start_worker, wait_worker

    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    proc = start_worker([sys.executable, "-c", script], dict(os.environ))
    assert _wait_for(lambda: pid_file.is_file() and bool(pid_file.read_text()))
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            wait_worker(proc, 1.0, "test worker")
        except BaseException as exc:  # recorded, asserted below
            raised.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(120)  # a liveness bound, not a speed check: before the fix it never returned
    assert not waiter.is_alive(), "wait_worker hung on the grandchild's open pipes"
    assert len(raised) == 1 and isinstance(raised[0], WorkerTimeout)
    assert isinstance(raised[0], EngineError) and raised[0].seconds == 1.0
    assert "test worker timed out after 1 s" in str(raised[0])
    grandchild = int(pid_file.read_text())
    assert _wait_for(lambda: not Path(f"/proc/{grandchild}").exists() or _zombie(grandchild))
