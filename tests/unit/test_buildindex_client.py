"""BuildIndexClient and cross-cluster replication against real HTTP servers on loopback:
build-index apps (in-memory store) served by Werkzeug in threads, one behind a middleware
that fails its first requests the way an overloaded or restarting remote would."""

import socket
import threading
import time

import pytest
from werkzeug.serving import make_server

from buildindex.app import create_app
from buildindex.client import BuildIndexClient
from buildindex.config import BuildIndexConfig, ListingConfig
from buildindex.replication import Remotes, Replicator
from buildindex.tagstore import MemoryTagStore
from buildindex.tagtypes import DefaultTagType, DockerTagType, TagTypes
from common.digest import Digest
from common.errors import NotFound, Rejected, Unavailable

D = Digest.of_bytes(b"manifest")


class Flaky:
    """WSGI middleware: answers 503 to the first `failures` PUTs, then passes through."""

    def __init__(self, app, failures: int):
        self.app = app
        self.failures = failures
        self.puts: list[tuple[float, int]] = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "PUT":
            failing = len(self.puts) < self.failures
            self.puts.append((time.monotonic(), 503 if failing else 200))
            if failing:
                start_response("503 Service Unavailable", [("Content-Type", "application/json")])
                return [b'{"error": "overloaded"}']
        return self.app(environ, start_response)


class Served:
    def __init__(self, wsgi):
        self.server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        self.addr = f"127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def build_index(remotes=None, send=None, rules=((".*", "default"),), **replication):
    store = MemoryTagStore()
    kinds = {"default": DefaultTagType(), "docker": DockerTagType(None)}
    replicator = Replicator(Remotes(remotes or {}), send or (lambda *a: None), **replication)
    app = create_app(BuildIndexConfig(listing=ListingConfig(default_limit=2, max_limit=10)), tag_store=store,
                     tag_types=TagTypes([(p, kinds[t]) for p, t in rules], kinds["docker"]),
                     replicator=replicator)
    return app, store, replicator


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def served():
    started = []

    def serve(wsgi):
        s = Served(wsgi)
        started.append(s)
        return s

    yield serve
    for s in started:
        s.close()


def test_client_round_trip_with_failover(served):
    app, store, _ = build_index()
    s = served(app)
    client = BuildIndexClient([closed_port(), s.addr])
    client.ping()
    client.put_tag("library/busybox:1", D)
    assert client.get_tag("library/busybox:1") == D
    assert store.get("library/busybox", "1") == D
    assert client.has_tag("library/busybox:1") and not client.has_tag("library/busybox:2")
    with pytest.raises(NotFound):
        client.get_tag("library/busybox:2")
    with pytest.raises(Rejected):
        client.put_tag("Library/busybox:1", D)
    with pytest.raises(NotFound):
        client.replicate("library/busybox:2")
    assert client.replicate("library/busybox:1") == []


def test_client_pages_listings(served):
    app, _, _ = build_index()
    client = BuildIndexClient([served(app).addr])
    for i in range(5):
        client.put_tag(f"library/busybox:{i}", D)
    client.put_tag("library/alpine:1", D)
    client.put_tag("team/app:1", D)
    assert client.list_repo("library/busybox") == (["0", "1"], 2)
    assert client.list_repo("library/busybox", limit=3, offset=2) == (["2", "3", "4"], None)
    assert client.list_repo("library/busybox", limit=2, last="2") == (["3", "4"], None)
    assert client.list_repo("nobody") == ([], None)
    assert client.list_prefix("library", limit=10) == (["library/alpine", "library/busybox"], None)
    assert client.list_prefix("", limit=1, offset=1) == (["library/busybox"], 2)
    assert client.list_prefix("", last="library/busybox") == (["team/app"], None)
    with pytest.raises(Rejected):
        client.list_prefix("", limit=11)


def test_client_unavailable_when_no_instance_answers(served):
    down = BuildIndexClient([closed_port(), closed_port()], timeout=(0.5, 1))
    with pytest.raises(Unavailable):
        down.get_tag("repo:1")
    with pytest.raises(Unavailable):
        down.ping()
    broken = served(Flaky(build_index()[0], failures=100))
    with pytest.raises(Unavailable, match="503"):
        BuildIndexClient([broken.addr]).put_tag("repo:1", D)


def test_replication_retries_a_failing_remote_until_it_accepts(served):
    remote_app, remote_store, _ = build_index()
    flaky = Flaky(remote_app, failures=2)
    remote = served(flaky)

    def send(addr, tag, digest):
        BuildIndexClient([addr], timeout=(1, 5)).put_tag(tag, digest)

    local_app, _, replicator = build_index(remotes={remote.addr: ["^library/"]}, send=send,
                                           base_delay=0.05, max_delay=1, max_attempts=5)
    local = BuildIndexClient([served(local_app).addr])
    local.put_tag("library/busybox:1", D, replicate=True)
    local.put_tag("team/app:1", D, replicate=True)  # No remote matches.
    assert replicator.wait_idle(10)
    assert remote_store.get("library/busybox", "1") == D
    assert remote_store.get("team/app", "1") is None
    assert [status for _, status in flaky.puts] == [503, 503, 200]
    # Exponential backoff: the second wait is about twice the first.
    (t0, _), (t1, _), (t2, _) = flaky.puts
    assert t1 - t0 >= 0.05 * 0.8 and t2 - t1 >= 0.1 * 0.8
    replicator.stop(0)


def test_replication_gives_up_after_bounded_attempts(caplog):
    calls = []

    def send(addr, tag, digest):
        calls.append(time.monotonic())
        raise Unavailable("remote down")

    results = []
    replicator = Replicator(Remotes({"127.0.0.9:1": [".*"]}), send, base_delay=0.01, max_attempts=3,
                            on_result=results.append)
    assert replicator.enqueue("repo:1", D) == ["127.0.0.9:1"]
    assert replicator.wait_idle(5)
    assert len(calls) == 3 and results == ["retry", "retry", "failed"]
    assert "failed for good after 3 attempts" in caplog.text
    replicator.stop(0)


def test_replication_to_a_real_second_instance_by_post(served):
    remote_app, remote_store, _ = build_index()
    remote = served(remote_app)

    def send(addr, tag, digest):
        BuildIndexClient([addr]).put_tag(tag, digest)

    local_app, local_store, replicator = build_index(remotes={remote.addr: [".*"]}, send=send)
    local_store.put("library/busybox", "7", D)
    assert BuildIndexClient([served(local_app).addr]).replicate("library/busybox:7") == [remote.addr]
    assert replicator.wait_idle(10)
    assert remote_store.get("library/busybox", "7") == D
    replicator.stop(0)
