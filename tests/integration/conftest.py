"""A real cluster for the integration tests: redis-server, a tracker, 3 origins (replicas
2), build-index, the proxy and 6 agents (server and registry ports), each a gunicorn
process; origins and agents each on their own loopback address."""

from __future__ import annotations

import pytest

from common.devcluster import Cluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), agents=6, origins=3, replicas=2)
    c.start()
    yield c
    c.stop()


@pytest.fixture
def backend_up(backend):
    """A module's `backend` (a stoppable storage-backend process) runs at the start and at
    the end of every test, whatever the test stopped."""
    if backend.ctx is None:
        backend.start()
    yield backend
    if backend.ctx is None:
        backend.start()
