"""High availability with real docker (issue 5): a cluster with 2 trackers, 2 build-indexes and
3 origins (replicas 2), the proxy and 3 agents; origins and build-index write back to, and
refresh from, an HTTP file-server backend (testfs, a process on a fixed port we stop and
start). Each test kills, restarts or wipes parts of it and checks that `docker push`,
`docker pull` through an agent and `docker run` still work."""

from __future__ import annotations

import os
import shutil
import signal
from urllib.parse import quote

import pytest
import redis
import requests

from common import bencode
from common.backends import keys
from common.devcluster import Cluster
from common.digest import Digest
from tests.integration import docker_env
from tests.integration.docker_env import DOCKER_MANIFEST, pull_digest, push_digest, token
from tests.integration.helpers import agent_url, upload, wait_for
from tests.integration.images import build_image
from tests.integration.test_storage_backends import wipe_origins
from tests.servers import RestartableTestfs
from torrents.metainfo import Metainfo

dockerd = docker_env.dockerd

DOCKER_TIMEOUT = 180
WRITEBACK = {"base_delay": 0.2, "max_delay": 1.0}


@pytest.fixture(scope="module")
def ha(tmp_path_factory, backend):
    rules = [{"namespace": ".*", "backend": "http",
              "http": {"url": f"http://127.0.0.1:{backend.port}", "timeout": 5}}]
    c = Cluster(tmp_path_factory.mktemp("ha"), agents=3, origins=3, replicas=2, trackers=2, build_index=2,
                backend="none",
                origin_config={"backends": rules, "writeback": WRITEBACK},
                build_index_config={"backends": rules, "writeback": WRITEBACK})
    c.start()
    yield c
    c.stop()


@pytest.fixture
def all_up(ha, backend_up):
    """Every process of the cluster runs (and answers /health) after each test, whatever
    the test killed."""
    yield ha
    for name, proc in ha.procs.items():
        if not proc.alive():
            ha.restart(name)
    ha.wait_healthy(60)


# Helpers.

def docker(dockerd, *args: str, timeout: float = DOCKER_TIMEOUT):
    return dockerd.run(*args, timeout=timeout)


def push(dockerd, tmp_path, cluster: Cluster, repo: str, tag: str = "1", layer_sizes=(4 << 20, 64 << 10)):
    """Builds a fresh image and pushes it to the proxy as repo:tag: (image, manifest digest)."""
    img = build_image(dockerd, tmp_path, f"kraken-test/img-{token()}:1", layer_sizes=layer_sizes)
    ref = f"{cluster.proxy}/{repo}:{tag}"
    docker(dockerd, "tag", img.ref, ref)
    return img, push_digest(docker(dockerd, "push", ref).stdout)


def pull_and_run(dockerd, cluster: Cluster, agent: int, repo: str, tag: str, digest: str, message: str) -> None:
    """Nothing local, then `docker pull` through agent's registry port and `docker run`."""
    dockerd.wipe()
    ref = f"{cluster.agents[agent]['registry']}/{repo}:{tag}"
    assert pull_digest(docker(dockerd, "pull", ref).stdout) == digest
    run = docker(dockerd, "run", "--rm", "--network", "none", ref)
    assert run.stdout == message + "\n", run.stdout
    dockerd.wipe()


def image_blobs(cluster: Cluster, repo: str, tag: str) -> list[Digest]:
    """The manifest, its config and its layers, as the proxy serves them."""
    resp = requests.get(f"http://{cluster.proxy}/v2/{repo}/manifests/{tag}", headers={"Accept": DOCKER_MANIFEST},
                        timeout=30)
    assert resp.status_code == 200, resp.text
    manifest = resp.json()
    digests = [Digest.of_bytes(resp.content), Digest.parse(manifest["config"]["digest"])]
    return digests + [Digest.parse(layer["digest"]) for layer in manifest["layers"]]


def tag_path(backend: RestartableTestfs, repo: str, tag: str):
    return backend.root / keys.tag(repo, tag)


def written_back(backend: RestartableTestfs, repo: str, tag: str, digest: str, blobs: list[Digest]) -> bool:
    path = tag_path(backend, repo, tag)
    return (path.exists() and path.read_text().strip() == digest
            and all(backend.has(d) for d in blobs))


def wait_written_back(backend, repo, tag, digest, blobs, timeout=60):
    try:
        wait_for(lambda: written_back(backend, repo, tag, digest, blobs), timeout,
                 f"write-back of {repo}:{tag} and its {len(blobs)} blobs", interval=0.25)
    except AssertionError as exc:
        missing = [str(d) for d in blobs if not backend.has(d)]
        path = tag_path(backend, repo, tag)
        raise AssertionError(f"{exc}; tag file {'present' if path.exists() else 'missing'}; "
                             f"blobs missing: {missing}") from None


def build_index_tag(addr: str, repo: str, tag: str) -> requests.Response:
    return requests.get(f"http://{addr}/tags/{quote(f'{repo}:{tag}', safe='')}", timeout=30)


def flush_redis(cluster: Cluster) -> None:
    host, port = cluster.redis_addr.split(":")
    client = redis.Redis(host=host, port=int(port), socket_timeout=10)
    try:
        assert client.flushall()
        assert client.dbsize() == 0
    finally:
        client.close()


def handout(tracker: str, ns: str, digest: Digest) -> set[str]:
    """Addresses of the peers a tracker hands out for a blob, asked by a passer-by that
    leaves again at once."""
    base = f"http://{tracker}"
    torrent = requests.get(f"{base}/namespace/{quote(ns, safe='')}/blobs/{digest}/metainfo", timeout=10)
    assert torrent.status_code == 200, torrent.text
    infohash = Metainfo.from_torrent(torrent.content, expect=digest).infohash
    query = {"info_hash": infohash, "peer_id": b"-HA0001-" + os.urandom(6).hex().encode(), "port": 1,
             "left": 1, "compact": 0}
    resp = requests.get(f"{base}/announce", params=query, timeout=10)
    requests.get(f"{base}/announce", params={**query, "event": "stopped"}, timeout=10)
    assert resp.status_code == 200, resp.content
    return {p[b"ip"].decode() for p in bencode.decode(resp.content)[b"peers"]}


def kill(cluster: Cluster, name: str) -> None:
    proc = cluster.procs[name]
    proc.signal(signal.SIGKILL)
    proc.popen.wait(10)
    assert not proc.alive()


# Scenarios.

def test_build_index_restarted_with_wiped_disk_and_flushed_redis_recovers_tags_from_backend(
        all_up, backend_up, dockerd, tmp_path):
    cluster, backend = all_up, backend_up
    repo, tag = f"ha/rebuild-{token()}", "1"
    img, digest = push(dockerd, tmp_path, cluster, repo, tag)
    blobs = image_blobs(cluster, repo, tag)
    wait_written_back(backend, repo, tag, digest, blobs)

    # Every build-index loses its disk (write-back queue included) and Redis loses every tag.
    names = [f"buildindex-{i}" for i in range(cluster.n_build_index)]
    for name in names:
        cluster.procs[name].stop()
    for i in range(cluster.n_build_index):
        shutil.rmtree(cluster.workdir / f"buildindex-{i}", ignore_errors=True)
    flush_redis(cluster)
    for name in names:
        cluster.restart(name)

    for addr in cluster.build_index:
        resp = build_index_tag(addr, repo, tag)
        assert resp.status_code == 200, (addr, resp.status_code, resp.text)
        assert resp.text.strip() == digest
    resp = requests.get(f"http://{cluster.proxy}/v2/{repo}/tags/list", timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"name": repo, "tags": [tag]}
    pull_and_run(dockerd, cluster, 0, repo, tag, digest, img.message)


def test_docker_image_distribution_high_availability(all_up, backend_up, dockerd, tmp_path):
    """Kraken's scenario: the backend is down while the image is pushed and while every
    origin and build-index restarts; when it returns, everything is written back, and after
    every origin loses its disk an agent that never saw the image pulls it from the backend."""
    cluster, backend = all_up, backend_up
    backend.stop()
    repo, tag = f"ha/distribution-{token()}", "1"
    img, digest = push(dockerd, tmp_path, cluster, repo, tag)
    blobs = image_blobs(cluster, repo, tag)
    # Nothing new can have reached the stopped backend (the busybox base layer, blobs[2],
    # is in every test image and was written back before).
    assert not tag_path(backend, repo, tag).exists()
    new = blobs[:2] + blobs[3:]
    assert not [d for d in new if backend.has(d)]

    for name in [f"origin-{i}" for i in range(cluster.n_origins)] + \
                [f"buildindex-{i}" for i in range(cluster.n_build_index)]:
        cluster.restart(name)
    # Still without the backend, the restarted cluster serves the image from the origins'
    # disks (agent 2 pulls it; agent 1, used below, does not).
    pull_and_run(dockerd, cluster, 2, repo, tag, digest, img.message)
    assert not tag_path(backend, repo, tag).exists()
    backend.start()
    wait_written_back(backend, repo, tag, digest, blobs)

    wipe_origins(cluster)
    # Agent 1 never pulled this image (every image here is new, and agent 0 did the pulls
    # before); its blobs now exist only in the backend.
    pull_and_run(dockerd, cluster, 1, repo, tag, digest, img.message)


def test_agent_downloads_blob_with_one_of_two_trackers_killed(all_up, tmp_path):
    cluster = all_up
    ns = "ha/trackers"
    data = os.urandom(3 << 20)
    digest = upload(cluster, data, tmp_path, ns)
    kill(cluster, "tracker-0")
    try:
        # Agents ask tracker-0 first for metainfo and announce to both: each of these agents
        # never saw the blob; the second may take it from the first over BitTorrent.
        for i in (2, 1):
            resp = requests.get(agent_url(cluster, i, digest, ns), timeout=90)
            assert resp.status_code == 200, (i, resp.status_code, resp.text[:500])
            assert resp.content == data
        # Both agents announced to the surviving tracker, which hands them out as peers.
        agents = {cluster.agents[i]["server"].split(":")[0] for i in (1, 2)}
        wait_for(lambda: agents <= handout(cluster.trackers[1], ns, digest), 30,
                 f"tracker-1 to hand out agents {sorted(agents)}", interval=0.5)
    finally:
        cluster.restart("tracker-0")
    # And with tracker-0 back, a new blob still reaches an agent.
    data2 = os.urandom(1 << 20)
    digest2 = upload(cluster, data2, tmp_path, ns)
    resp = requests.get(agent_url(cluster, 0, digest2, ns), timeout=90)
    assert resp.status_code == 200 and resp.content == data2


def test_docker_pull_and_push_with_one_of_two_build_indexes_killed(all_up, dockerd, tmp_path):
    cluster = all_up
    repo = f"ha/buildindex-{token()}"
    img, digest = push(dockerd, tmp_path, cluster, repo, "1")
    dockerd.wipe()
    kill(cluster, "buildindex-0")
    try:
        # Pull by tag: the agent resolves the tag through build-index, buildindex-0 first.
        pull_and_run(dockerd, cluster, 2, repo, "1", digest, img.message)
        # Push a new tag: the proxy checks and writes it through build-index.
        img2, digest2 = push(dockerd, tmp_path, cluster, repo, "2")
        resp = build_index_tag(cluster.build_index[1], repo, "2")
        assert resp.status_code == 200 and resp.text.strip() == digest2, resp.text
        resp = requests.get(f"http://{cluster.proxy}/v2/{repo}/tags/list", timeout=30)
        assert resp.status_code == 200 and resp.json() == {"name": repo, "tags": ["1", "2"]}, resp.text
        pull_and_run(dockerd, cluster, 1, repo, "2", digest2, img2.message)
    finally:
        cluster.restart("buildindex-0")
    # The restarted instance answers for the tag pushed while it was dead (shared Redis).
    resp = build_index_tag(cluster.build_index[0], repo, "2")
    assert resp.status_code == 200 and resp.text.strip() == digest2, resp.text

