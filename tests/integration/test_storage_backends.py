"""Kraken's storage-backend scenarios against a real cluster whose origins write back to,
and refresh from, an HTTP file-server backend (testfs, a real process we can kill)."""

from __future__ import annotations

import os
import shutil
import time

import pytest
import requests

from common.backends import keys
from common.devcluster import Cluster
from common.digest import Digest
from origin.client import OriginClient
from tests.integration.helpers import agent_url, upload, wait_for

NS = "backed/app"


@pytest.fixture(scope="module")
def backed(tmp_path_factory, backend):
    rules = [{"namespace": "backed/.*", "backend": "http",
              "http": {"url": f"http://127.0.0.1:{backend.port}", "timeout": 5}}]
    c = Cluster(tmp_path_factory.mktemp("backed"), agents=2, origins=3, replicas=2,
                origin_config={"backends": rules, "writeback": {"base_delay": 0.2, "max_delay": 1.0}})
    c.start()
    yield c
    c.stop()


def fetch(cluster, i, digest, timeout=60):
    return requests.get(agent_url(cluster, i, digest, NS), timeout=timeout)


def wipe_origins(cluster):
    """Every origin loses its disk: stopped, its store removed, started again."""
    for i in range(cluster.n_origins):
        cluster.procs[f"origin-{i}"].stop()
        shutil.rmtree(cluster.workdir / f"origin-{i}", ignore_errors=True)
    for i in range(cluster.n_origins):
        cluster.restart(f"origin-{i}")


def test_uploaded_blob_is_written_back(backed, backend_up, tmp_path):
    data = os.urandom(3 << 20)
    digest = upload(backed, data, tmp_path, NS)
    wait_for(lambda: backend_up.has(digest), 20, "write-back to the backend")
    assert (backend_up.root / keys.blob(digest)).read_bytes() == data


def test_agent_downloads_blob_put_straight_into_the_backend(backed, backend_up):
    data = os.urandom(5 << 20)
    digest = Digest.of_bytes(data)
    backend_up.client.put_bytes(NS, keys.blob(digest), data)
    resp = fetch(backed, 0, digest)
    assert resp.status_code == 200, resp.text
    assert resp.content == data


def test_agent_download_survives_origin_data_loss(backed, backend_up, tmp_path):
    data = os.urandom(2 << 20)
    digest = upload(backed, data, tmp_path, NS)
    wait_for(lambda: backend_up.has(digest), 20, "write-back to the backend")
    wipe_origins(backed)
    resp = fetch(backed, 1, digest)
    assert resp.status_code == 200, resp.text
    assert resp.content == data


def test_blob_in_no_backend_is_404(backed, backend_up):
    resp = fetch(backed, 0, Digest.of_bytes(b"stored nowhere"), timeout=30)
    assert resp.status_code == 404, resp.text


def test_backend_down_and_blob_nowhere_else_fails_promptly(backed, backend_up):
    digest = Digest.of_bytes(os.urandom(64))
    backend_up.stop()
    started = time.monotonic()
    resp = fetch(backed, 0, digest, timeout=60)
    elapsed = time.monotonic() - started
    assert resp.status_code >= 500, resp.text
    # Promptness bound, not a performance target: a hang would run into the 60 s timeout.
    assert elapsed < 20, f"took {elapsed:.1f}s"


def test_backend_down_upload_and_distribution_work_then_write_back_catches_up(backed, backend_up, tmp_path):
    backend_up.stop()
    data = os.urandom(4 << 20)
    digest = upload(backed, data, tmp_path, NS)
    for i in range(2):
        resp = fetch(backed, i, digest)
        assert resp.status_code == 200 and resp.content == data
    time.sleep(1.5)
    assert not backend_up.has(digest)
    backend_up.start()
    wait_for(lambda: backend_up.has(digest), 30, "write-back after the backend returned")
    assert (backend_up.root / keys.blob(digest)).read_bytes() == data


def test_one_of_two_replicas_offline_download_still_succeeds(backed, backend_up, tmp_path):
    from common.ring import HashRing

    data = os.urandom(3 << 20)
    digest = upload(backed, data, tmp_path, NS)
    first, second = HashRing(backed.origins, backed.replicas).locations(digest)
    # Replication is asynchronous: the scenario starts once both replicas hold the blob.
    wait_for(lambda: requests.head(f"http://{second}/namespace/{NS}/blobs/{digest}", timeout=5).status_code == 200,
             20, "replication to the second replica")
    name = f"origin-{backed.origins.index(first)}"
    backed.procs[name].signal(9)
    try:
        resp = fetch(backed, 0, digest)
        assert resp.status_code == 200 and resp.content == data
    finally:
        backed.restart(name)


def test_agent_with_wiped_disk_and_wiped_origins_still_downloads(backed, backend_up, tmp_path):
    """Kraken's scenario: the agent restarts with an empty disk, every origin lost its
    disk too, and only the tracker's cached metainfo and the backend remain."""
    data = os.urandom(2 << 20)
    digest = upload(backed, data, tmp_path, NS)
    assert fetch(backed, 1, digest).content == data
    wait_for(lambda: backend_up.has(digest), 20, "write-back to the backend")
    backed.procs["agent-1"].stop()
    shutil.rmtree(backed.workdir / "agent-1", ignore_errors=True)
    backed.restart("agent-1")
    wipe_origins(backed)
    resp = fetch(backed, 1, digest)
    assert resp.status_code == 200, resp.text
    assert resp.content == data


def test_a_cache_hit_at_the_tracker_refills_a_replica_that_lost_the_blob(backed, backend_up, tmp_path):
    """Self-healing: the tracker's nudge on a metainfo hit reaches every replica, so the
    second replica, wiped while the first still serves the blob, fetches it back from the
    backend (asking replicas only until one answered left it empty for good)."""
    data = os.urandom(1 << 20)
    digest = upload(backed, data, tmp_path, NS)
    wait_for(lambda: backend_up.has(digest), 20, "write-back to the backend")
    first, second = OriginClient(backed.origins[0]).locations(digest)[:2]

    def on_disk(addr):
        return any((backed.workdir / f"origin-{backed.origins.index(addr)}").rglob(digest.hex))

    wait_for(lambda: on_disk(first) and on_disk(second), 20, "the blob on both replicas")
    name = f"origin-{backed.origins.index(second)}"
    backed.procs[name].stop()
    shutil.rmtree(backed.workdir / name, ignore_errors=True)
    backed.restart(name)
    assert not on_disk(second)
    # The origin handed its metainfo to the trackers at commit: this GET is a cache hit.
    resp = requests.get(f"http://{backed.trackers[0]}/namespace/{NS}/blobs/{digest}/metainfo", timeout=10)
    assert resp.status_code == 200
    wait_for(lambda: on_disk(second), 30, "the wiped replica to fetch the blob back")
    assert on_disk(first)


def test_dev_cluster_writes_back_to_its_fs_backend_by_default(cluster, tmp_path):
    info = cluster.info()
    assert info["backend"] == str(cluster.workdir / "backend")
    data = os.urandom(100_000)
    digest = upload(cluster, data, tmp_path, "default")
    path = cluster.workdir / "backend" / keys.blob(digest)
    wait_for(path.exists, 20, "write-back to the dev cluster's fs backend")
    assert path.read_bytes() == data
