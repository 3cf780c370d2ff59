"""Helpers for the integration tests."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import requests
from werkzeug.serving import make_server

from common.devcluster import Cluster
from common.digest import Digest
from common.ring import HashRing
from origin.client import ClusterClient
from tracker.app import create_app
from tracker.config import TrackerConfig


def upload(cluster: Cluster, data: bytes, tmp_path, namespace: str = "test") -> Digest:
    path = tmp_path / f"blob-{len(data)}-{os.getpid()}-{time.monotonic_ns()}"
    path.write_bytes(data)
    digest = Digest.of_bytes(data)
    ClusterClient(HashRing(cluster.origins, cluster.replicas)).upload(namespace, digest, path)
    return digest


def agent_url(cluster: Cluster, i: int, digest: Digest, namespace: str = "test") -> str:
    return f"http://{cluster.agents[i]['server']}/namespace/{namespace}/blobs/{digest}"


def metric(addr: str, name: str) -> float:
    for line in requests.get(f"http://{addr}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def registry_url(cluster: Cluster, i: int, path: str) -> str:
    """`path` (starting with /v2/) on agent i's registry port."""
    return f"http://{cluster.agents[i]['registry']}{path}"


def put_tag(cluster: Cluster, tag: str, digest: Digest) -> None:
    """Points `repo:tag` at `digest` in build-index (which checks that a docker image is
    complete in the origin ring)."""
    from buildindex.client import BuildIndexClient

    BuildIndexClient(cluster.build_index).put_tag(tag, digest)


class _NoOrigins:
    def get_metainfo(self, namespace, digest):
        raise AssertionError("not used")


@contextlib.contextmanager
def tracker_in_thread(peer_store):
    """The tracker app served by Werkzeug in a thread of this process, on `peer_store`
    (no metainfo cache, no origins); yields its announce URL."""
    app = create_app(TrackerConfig(), peer_store=peer_store, metainfo_cache=None, origins=_NoOrigins())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/announce"
    finally:
        server.shutdown()
