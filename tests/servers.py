"""Real third-party servers the tests start on loopback: moto's S3 API, the testfs file
server, Debian's docker-registry (the CNCF distribution registry). Each is a subprocess
stopped by PID."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited {proc.returncode}:\n{_tail(log)}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{url}: no answer after {timeout} s:\n{_tail(log)}") from None
            time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return ""


@contextlib.contextmanager
def process(args: list[str], url: str, log: Path, env: dict | None = None):
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_http(url, proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def moto_s3(workdir: Path):
    """moto's standalone server: a real S3 API over HTTP (in memory)."""
    port = free_port()
    binary = VENV_BIN / "moto_server"
    with process([str(binary), "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/moto-api/",
                 workdir / "moto.log") as proc:
        yield f"http://127.0.0.1:{port}", proc


@contextlib.contextmanager
def testfs(root: Path, port: int = 0):
    port = port or free_port()
    args = [sys.executable, "-m", "common.backends.testfs", "--root", str(root), "--port", str(port)]
    with process(args, f"http://127.0.0.1:{port}/list/", root.parent / f"testfs-{port}.log") as proc:
        yield f"127.0.0.1:{port}", proc


@contextlib.contextmanager
def docker_registry(workdir: Path, port: int = 0):
    """Debian's docker-registry with filesystem storage, no auth, deletes disabled."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed; `make test` installs it"
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}, delete: {{enabled: false}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    with process([binary, "serve", str(config)], f"http://127.0.0.1:{port}/v2/", workdir / "registry.log") as proc:
        yield f"127.0.0.1:{port}", proc
