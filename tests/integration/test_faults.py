"""Fault injection against a real cluster: processes killed with SIGKILL in the middle of
their work, Redis lost, an agent's disk full. Each test names the behaviour it checks; each
puts the cluster back as it found it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from common import bencode
from common.backends import keys
from common.devcluster import Cluster
from common.digest import Digest
from common.ring import HashRing
from origin.client import ClusterClient
from tests import servers
from tests.integration.helpers import agent_url, upload, wait_for
from torrents.metainfo import Metainfo

# Blobs only the origins hold (no storage backend): an origin answers 404 or the blob.
PLAIN = "faults/plain"
# Blobs and tags also written back to the testfs backend.
BACKED = "backed/faults"
MiB = 1 << 20


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-backend") / "root"
    with servers.testfs(root) as (addr, _proc):
        yield {"root": root, "url": f"http://{addr}"}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, backend):
    rules = [{"namespace": "backed/.*", "backend": "http", "http": {"url": backend["url"], "timeout": 5}}]
    fast = {"base_delay": 0.2, "max_delay": 1.0}
    state = tmp_path_factory.mktemp("faults-buildindex")
    c = Cluster(
        tmp_path_factory.mktemp("faults"), agents=3, origins=3, replicas=2, proxy=False, backend="none",
        # A replica that was down a while still gets its copy once it is back.
        origin_config={"backends": rules, "writeback": fast, "replication": {"attempts": 10, "backoff": 0.5}},
        # Tags of any digest (no manifest check), written back to the same backend.
        build_index_config={"backends": rules, "writeback": fast, "state_dir": str(state),
                            "default_type": "default"},
    )
    c.start()
    yield c
    c.stop()


@pytest.fixture
def all_up(faulty):
    """Whatever a test killed is started again, even when it failed half way."""
    yield faulty
    for name, proc in faulty.procs.items():
        if not proc.alive():
            faulty.restart(name)


def origin_get(addr: str, ns: str, digest: Digest, timeout: float = 30) -> requests.Response:
    return requests.get(f"http://{addr}/namespace/{quote(ns, safe='')}/blobs/{digest}", timeout=timeout)


def fetch(cluster: Cluster, i: int, digest: Digest, ns: str, timeout: float = 60) -> requests.Response:
    return requests.get(agent_url(cluster, i, digest, ns), timeout=timeout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def origin_index(cluster: Cluster, addr: str) -> int:
    return cluster.origins.index(addr)


def both_replicas_have(cluster: Cluster, ns: str, digest: Digest) -> bool:
    for addr in HashRing(cluster.origins, cluster.replicas).locations(digest):
        try:
            if requests.head(f"http://{addr}/namespace/{quote(ns, safe='')}/blobs/{digest}",
                             timeout=5).status_code != 200:
                return False
        except requests.RequestException:
            return False
    return True


# 1. An origin killed in the middle of a chunked upload.

def test_origin_killed_mid_upload_client_fails_over_and_no_partial_blob_is_ever_served(all_up, tmp_path):
    cluster = all_up
    data = os.urandom(48 * MiB)
    digest = Digest.of_bytes(data)
    path = tmp_path / "blob"
    path.write_bytes(data)
    first, second = HashRing(cluster.origins, cluster.replicas).locations(digest)
    victim = f"origin-{origin_index(cluster, first)}"
    uploads_dir = cluster.workdir / victim / "uploads"

    result: dict = {}

    def progress(_offset):
        time.sleep(0.03)  # small chunks, slowly: the kill lands half way

    def run_upload():
        try:
            client = ClusterClient(HashRing(cluster.origins, cluster.replicas))
            result["stored"] = client.upload(PLAIN, digest, path, chunk_size=MiB, on_progress=progress)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    # Everyone is asked for the blob throughout: 404 or the whole blob, nothing between.
    served: list[tuple[str, int, str | None]] = []
    stop_watch = threading.Event()

    def watch():
        while not stop_watch.is_set():
            for addr in cluster.origins:
                try:
                    resp = origin_get(addr, PLAIN, digest, timeout=10)
                except requests.RequestException:
                    continue  # the victim, dead
                served.append((addr, resp.status_code, sha(resp.content) if resp.status_code == 200 else None))
            time.sleep(0.05)

    uploader = threading.Thread(target=run_upload)
    watcher = threading.Thread(target=watch)
    watcher.start()
    uploader.start()
    try:
        def landed() -> int:
            return sum(p.stat().st_size for p in uploads_dir.iterdir() if not p.name.endswith(".json"))

        wait_for(lambda: landed() >= 8 * MiB, 30, f"the first chunks on {victim}", interval=0.01)
        cluster.procs[victim].signal(signal.SIGKILL)
        cluster.procs[victim].popen.wait(10)
        left = landed()
        assert left < len(data), "the upload finished before the kill; nothing tested"
        uploader.join(60)
        assert not uploader.is_alive(), "upload hung after the origin died"
        assert "error" not in result, f"upload did not fail over: {result.get('error')!r}"
        assert result["stored"] is True
        # The surviving replica has it whole; agents get the right bytes.
        resp = origin_get(second, PLAIN, digest)
        assert resp.status_code == 200 and sha(resp.content) == digest.hex
        for i in range(2):
            resp = fetch(cluster, i, digest, PLAIN)
            assert resp.status_code == 200, resp.text
            assert sha(resp.content) == digest.hex
    finally:
        stop_watch.set()
        watcher.join(30)

    bad = [(a, s, h) for a, s, h in served if s not in (200, 404) or (s == 200 and h != digest.hex)]
    assert not bad, f"partial or wrong answers while the upload failed over: {bad[:5]}"
    assert any(s == 200 for _, s, _ in served), "the watcher never saw the committed blob"

    # The killed origin comes back: its half upload is still on disk but never a blob. It
    # answers 404 or (once the surviving replica's retry has pushed it) the whole blob.
    leftovers = [p for p in uploads_dir.iterdir() if not p.name.endswith(".json")]
    assert leftovers and max(p.stat().st_size for p in leftovers) < len(data)
    cluster.restart(victim)
    resp = origin_get(first, PLAIN, digest)
    assert resp.status_code in (200, 404), resp.text
    if resp.status_code == 200:
        assert sha(resp.content) == digest.hex
    blob_file = cluster.workdir / victim / "blobs" / digest.shard / digest.hex
    if blob_file.exists():
        assert Digest.of_file(blob_file) == digest
    # Replication to the returning replica catches up (the survivor retries with backoff).
    wait_for(lambda: origin_get(first, PLAIN, digest).status_code == 200, 45,
             f"replication of the blob to the restarted {victim}", interval=0.5)
    assert sha(origin_get(first, PLAIN, digest).content) == digest.hex


# 2. One of a blob's two replicas offline.

def test_download_through_fresh_agent_succeeds_with_one_of_two_replicas_killed(all_up, tmp_path):
    cluster = all_up
    data = os.urandom(6 * MiB)
    digest = upload(cluster, data, tmp_path, PLAIN)
    wait_for(lambda: both_replicas_have(cluster, PLAIN, digest), 20, "both replicas")
    first, _second = HashRing(cluster.origins, cluster.replicas).locations(digest)
    victim = f"origin-{origin_index(cluster, first)}"
    cluster.procs[victim].signal(signal.SIGKILL)
    cluster.procs[victim].popen.wait(10)
    # No agent has asked for this blob yet: agent 2 needs the metainfo and the bytes from
    # the surviving replica (the tracker still lists the dead one as a peer).
    resp = fetch(cluster, 2, digest, PLAIN)
    assert resp.status_code == 200, resp.text
    assert sha(resp.content) == digest.hex
    cluster.restart(victim)
    resp = origin_get(first, PLAIN, digest)
    assert resp.status_code == 200 and sha(resp.content) == digest.hex


# 3. Redis lost: killed, started again empty.

def swarm(cluster: Cluster, ns: str, digest: Digest) -> set[str]:
    """Addresses of the peers the tracker hands out for a blob (asked by a passer-by that
    leaves again at once)."""
    tracker = f"http://{cluster.trackers[0]}"
    torrent = requests.get(f"{tracker}/namespace/{quote(ns, safe='')}/blobs/{digest}/metainfo", timeout=10)
    assert torrent.status_code == 200, torrent.text
    infohash = Metainfo.from_torrent(torrent.content, expect=digest).infohash
    peer_id = b"-FT0001-" + os.urandom(6).hex().encode()
    query = {"info_hash": infohash, "peer_id": peer_id, "port": 1, "left": 1, "compact": 0}
    resp = requests.get(f"{tracker}/announce", params=query, timeout=10)
    requests.get(f"{tracker}/announce", params={**query, "event": "stopped"}, timeout=10)
    assert resp.status_code == 200, resp.content
    return {p[b"ip"].decode() for p in bencode.decode(resp.content)[b"peers"]}


def test_redis_killed_and_restarted_empty_agents_reannounce_and_tags_come_back(all_up, backend, tmp_path):
    cluster = all_up
    old = os.urandom(4 * MiB)
    old_digest = upload(cluster, old, tmp_path, PLAIN)
    resp = fetch(cluster, 0, old_digest, PLAIN)
    assert resp.status_code == 200 and sha(resp.content) == old_digest.hex
    # A tag, written back to the storage backend before Redis goes.
    bi = f"http://{cluster.build_index[0]}"
    tag = quote(f"{BACKED}:v1", safe="")
    resp = requests.put(f"{bi}/tags/{tag}/digest/{old_digest}", timeout=10)
    assert resp.status_code in (200, 201, 204), resp.text
    wait_for(lambda: (backend["root"] / keys.tag(BACKED, "v1")).exists(), 20, "tag write-back")

    cluster.procs["redis"].signal(signal.SIGKILL)
    cluster.procs["redis"].popen.wait(10)
    cluster.restart("redis")

    # A new blob after the flush: two agents get it over P2P (the second may take it from
    # the first).
    new = os.urandom(6 * MiB)
    new_digest = upload(cluster, new, tmp_path, PLAIN)
    started = time.monotonic()
    for i in (1, 2):
        resp = fetch(cluster, i, new_digest, PLAIN)
        assert resp.status_code == 200, resp.text
        assert sha(resp.content) == new_digest.hex
    # A blob from before the flush, through an agent that does not have it: the swarm is
    # found again once the origins seeding it announce to the emptied tracker state.
    resp = fetch(cluster, 1, old_digest, PLAIN)
    assert resp.status_code == 200, resp.text
    assert sha(resp.content) == old_digest.hex
    elapsed = time.monotonic() - started
    assert elapsed < 50, f"downloads after the flush took {elapsed:.1f}s"
    # Agent 0 had the old blob before the flush and announced it again on its own.
    agent0 = cluster.agents[0]["server"].split(":")[0]
    wait_for(lambda: agent0 in swarm(cluster, PLAIN, old_digest), 30, "agent 0's announce after the flush",
             interval=1)
    # The tag Redis lost is read back from the storage backend.
    resp = requests.get(f"{bi}/tags/{tag}", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.text.strip() == str(old_digest)


# 4. An agent's disk full.

def _mount_tmpfs(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                   capture_output=True, timeout=10)


def _unmount(path: Path) -> None:
    for args in (["umount", str(path)], ["umount", "-l", str(path)]):
        if subprocess.run(args, check=False, capture_output=True, timeout=10).returncode == 0:
            return


@pytest.fixture
def small_disk_agent(all_up):
    """Agent 2 restarted on a 24 MiB tmpfs as its cache root; put back on its own disk
    afterwards (always unmounted)."""
    cluster = all_up
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.fail("mounting a tmpfs needs root (CI and `make test` run as root)")
    name, root = "agent-2", cluster.workdir / "agent-2"
    cluster.procs[name].stop()
    try:
        _mount_tmpfs(root, "24m")
    except subprocess.CalledProcessError as exc:
        cluster.restart(name)
        pytest.fail(f"cannot mount a tmpfs here: {exc.stderr.decode(errors='replace').strip()}")
    try:
        cluster.restart(name)
        yield cluster, 2, root
    finally:
        cluster.procs[name].stop()
        _unmount(root)
        cluster.restart(name)


def test_agent_disk_full_is_a_clear_5xx_leaves_nothing_behind_and_recovers(small_disk_agent, tmp_path):
    cluster, i, root = small_disk_agent
    data = os.urandom(32 * MiB)
    digest = upload(cluster, data, tmp_path, PLAIN)
    started = time.monotonic()
    resp = fetch(cluster, i, digest, PLAIN)
    assert 500 <= resp.status_code < 600, (resp.status_code, resp.text[:200])
    message = resp.json()["error"]
    assert "disk" in message.lower() or "space" in message.lower(), message
    # Promptness bound, not a performance target: a hang would run into the timeout.
    assert time.monotonic() - started < 30
    # Nothing half written is left: no blob, no partial download, no temp file.
    def leftovers():
        return [p for sub in ("blobs", "download", "tmp") for p in (root / sub).rglob("*") if p.is_file()]

    wait_for(lambda: not leftovers(), 10, f"the failed download's files to go: {leftovers()}")
    # Space comes back: the same agent now serves the blob, whole.
    subprocess.run(["mount", "-o", "remount,size=128m", str(root)], check=True, timeout=10)
    resp = fetch(cluster, i, digest, PLAIN)
    assert resp.status_code == 200, resp.text[:200]
    assert sha(resp.content) == digest.hex
    assert Digest.of_file(root / "blobs" / digest.shard / digest.hex) == digest


def test_agent_disk_too_small_for_two_downloads_refuses_the_second_and_recovers_when_filler_goes(
        small_disk_agent, tmp_path):
    cluster, i, root = small_disk_agent
    a, b = os.urandom(14 * MiB), os.urandom(14 * MiB)
    da, db = upload(cluster, a, tmp_path, PLAIN), upload(cluster, b, tmp_path, PLAIN)
    # Both asked for at once: 24 MiB hold one of them, the other is refused up front (507)
    # rather than failing half way with its response already started.
    with contextlib.ExitStack() as stack:
        ra = stack.enter_context(requests.get(agent_url(cluster, i, da, PLAIN), stream=True, timeout=60))
        rb = stack.enter_context(requests.get(agent_url(cluster, i, db, PLAIN), stream=True, timeout=60))
        assert ra.status_code == 200, ra.text[:200]
        assert sha(ra.content) == da.hex
        assert rb.status_code == 507, (rb.status_code, rb.text[:200])
        assert "disk is full" in rb.json()["error"]
    assert not list((root / "download").iterdir())
    # The first blob leaves; a filler takes its room, then goes too.
    assert requests.delete(f"http://{cluster.agents[i]['server']}/blobs/{da}", timeout=10).status_code == 200
    filler = root / "filler"
    filler.write_bytes(bytes(14 * MiB))
    resp = fetch(cluster, i, db, PLAIN)
    assert resp.status_code == 507 and "disk is full" in resp.json()["error"], resp.text[:200]
    filler.unlink()
    resp = fetch(cluster, i, db, PLAIN)
    assert resp.status_code == 200, resp.text[:200]
    assert sha(resp.content) == db.hex
