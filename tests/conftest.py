"""Shared fixtures: a real redis-server per test session, and helpers to make blobs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import gevent
import pytest

from common.devcluster import free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on loopback for the whole test session."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; `make test` installs it"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_client(redis_server):
    import redis

    host, port = redis_server.split(":")
    r = redis.Redis(host=host, port=int(port))
    r.flushall()
    yield r
    r.close()


def random_file(path, size: int) -> bytes:
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


@pytest.fixture
def loop_ticks():
    """The times a greenlet ticking every 5 ms ran: a test counts them across a call to
    show the event loop went on meanwhile."""
    ticks: list[float] = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    ticker = gevent.spawn(tick)
    gevent.sleep(0)
    yield ticks
    ticker.kill()


@pytest.fixture(autouse=True)
def _fresh_event_loop_clock():
    """Brings gevent's loop clock up to date before each test. The loop reads the time
    only when it runs, and tests that block in plain calls (subprocesses, HTTP clients)
    leave it as stale as they took: a test after 17 s of them had its first
    `joinall(timeout=5)` time out at once, its deadline counted from 17 s ago."""
    gevent.get_hub().loop.update_now()
    yield
