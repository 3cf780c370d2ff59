"""A real cluster for the integration tests: redis-server, a tracker, 3 origins (replicas
2), build-index, the proxy and 6 agents (server and registry ports), each a gunicorn
process; origins and agents each on their own loopback address."""

from __future__ import annotations

import pytest

from common.devcluster import Cluster
from tests.servers import RestartableTestfs


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), agents=6, origins=3, replicas=2)
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A storage backend (testfs over HTTP) for one module; a module may define its own."""
    b = RestartableTestfs(tmp_path_factory.mktemp("backend") / "root")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def backend_up(backend):
    """A module's `backend` (a stoppable storage-backend process) runs at the start and at
    the end of every test, whatever the test stopped."""
    if backend.ctx is None:
        backend.start()
    yield backend
    if backend.ctx is None:
        backend.start()
