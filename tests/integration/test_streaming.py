"""Agents stream a blob while it arrives: first bytes before the whole blob is there, only
verified pieces, and a failed download cuts the stream short instead of completing it."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests

from common.devcluster import Cluster
from tests.integration.helpers import agent_url, upload, wait_for

RATE = 4 << 20  # the origin's upload cap: a 24 MiB blob takes about 6 s to arrive


@pytest.fixture(scope="module")
def slow_cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("slow"), agents=2, origins=1, replicas=1,
                origin_config={"torrent": {"upload_rate_limit": RATE}},
                agent_config={"download": {"stall_timeout": 3}})
    c.start()
    yield c
    c.stop()


def status(cluster, i, digest):
    return requests.get(f"http://{cluster.agents[i]['server']}/blobs/{digest}/status", timeout=5).json()


def test_first_bytes_arrive_long_before_the_whole_blob(slow_cluster, tmp_path):
    data = os.urandom(24 << 20)
    digest = upload(slow_cluster, data, tmp_path)
    with requests.get(agent_url(slow_cluster, 0, digest), stream=True, timeout=(3, 60)) as resp:
        assert resp.status_code == 200 and int(resp.headers["Content-Length"]) == len(data)
        chunks = resp.iter_content(64 << 10)
        first = next(chunks)
        # The first bytes are here while most of the blob is not (no timing asserted:
        # how fast is the benchmark's business).
        progress = status(slow_cluster, 0, digest)
        assert progress["state"] == "downloading" and progress["done"] < len(data) // 2, progress
        body = first + b"".join(chunks)
    assert hashlib.sha256(body).hexdigest() == digest.hex
    wait_for(lambda: status(slow_cluster, 0, digest)["state"] == "cached", 10, "the blob to be cached")


def test_an_agent_alone_fetches_in_order_so_its_stream_flows(slow_cluster, tmp_path):
    # Alone in the swarm, the agent asks for the pieces in order: the client receives the
    # blob while it arrives rather than most of it in a burst at the end. (In libtorrent's
    # own random order, a quarter of the blob would almost never be ready in order while
    # three quarters are still to come.)
    data = os.urandom(24 << 20)
    digest = upload(slow_cluster, data, tmp_path)
    got, flowing, order = 0, [], set()
    with requests.get(agent_url(slow_cluster, 0, digest), stream=True, timeout=(3, 60)) as resp:
        for chunk in resp.iter_content(1 << 20):
            got += len(chunk)
            st = status(slow_cluster, 0, digest)
            if st["state"] == "downloading":
                order.add(st["sequential"])
                if got >= len(data) // 4 and st["done"] < len(data) * 3 // 4:
                    flowing.append((got, st["done"]))
    assert got == len(data)
    assert order == {True}, order
    assert flowing, "the stream had a quarter of the blob only once three quarters had arrived"


def test_range_of_a_blob_still_downloading(slow_cluster, tmp_path):
    data = os.urandom(12 << 20)
    digest = upload(slow_cluster, data, tmp_path)
    resp = requests.get(agent_url(slow_cluster, 1, digest), headers={"Range": "bytes=1000000-1999999"}, timeout=60)
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == f"bytes 1000000-1999999/{len(data)}"
    assert resp.content == data[1000000:2000000]
    head = requests.head(agent_url(slow_cluster, 1, digest), timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)


def test_download_that_fails_midway_cuts_the_stream_and_caches_nothing(slow_cluster, tmp_path):
    data = os.urandom(24 << 20)
    digest = upload(slow_cluster, data, tmp_path)
    got = 0
    with requests.get(agent_url(slow_cluster, 0, digest), stream=True, timeout=(3, 60)) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_content(64 << 10)
        got += len(next(chunks))
        slow_cluster.pause("origin-0")  # the only source stops: the agent stalls after 3 s
        try:
            # The agent closes the connection short of Content-Length: requests reports a
            # broken body (ChunkedEncodingError) or a broken connection, never a timeout.
            with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
                for chunk in chunks:
                    got += len(chunk)
        finally:
            slow_cluster.resume("origin-0")
    assert 0 < got < len(data), got
    wait_for(lambda: status(slow_cluster, 0, digest)["state"] == "absent", 20, "the failed download to be dropped")
    # Once the source is back, a new request succeeds.
    body = requests.get(agent_url(slow_cluster, 0, digest), timeout=60).content
    assert hashlib.sha256(body).hexdigest() == digest.hex


def test_agents_downloading_together_take_consecutive_slots_and_split_the_blob(slow_cluster, tmp_path):
    # Both agents ask at once; the tracker gives each a slot, and once they see each other
    # each puts its own half of the pieces first (agent.stripes), front first, so both
    # streams flow while the blob arrives. (With each half fetched in random order, a
    # quarter of the blob would almost never be ready in order while three quarters are
    # still to come.) The bodies must be whole.
    import threading

    data = os.urandom(24 << 20)
    digest = upload(slow_cluster, data, tmp_path)
    bodies: dict[int, bytes] = {}
    flowing: dict[int, list] = {0: [], 1: []}

    def fetch(i):
        got = []
        with requests.get(agent_url(slow_cluster, i, digest), stream=True, timeout=(3, 60)) as resp:
            for chunk in resp.iter_content(1 << 20):
                got.append(chunk)
                have = sum(map(len, got))
                st = status(slow_cluster, i, digest)
                if st["state"] == "downloading" and have >= len(data) // 4 and st["done"] < len(data) * 3 // 4:
                    flowing[i].append((have, st["done"]))
        bodies[i] = b"".join(got)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    seen: dict[int, dict] = {}

    def both_striped():
        for i in (0, 1):
            st = status(slow_cluster, i, digest)
            if st["state"] == "downloading":
                seen[i] = st
        return len(seen) == 2 and all(s["stripes"] == 2 and not s["sequential"] for s in seen.values())

    try:
        wait_for(both_striped, 20, "both agents to stripe the blob two ways")
    except AssertionError as exc:
        now = [status(slow_cluster, i, digest) for i in (0, 1)]
        raise AssertionError(f"{exc}; last seen downloading: {seen}; now: {now}") from None
    for t in threads:
        t.join(60)
    assert sorted(s["slot"] for s in seen.values()) == [0, 1], seen
    assert all(hashlib.sha256(bodies[i]).hexdigest() == digest.hex for i in (0, 1))
    assert flowing[0] and flowing[1], "a stream had a quarter of the blob only once three quarters had arrived"
