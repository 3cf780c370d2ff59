"""The build-index app with the in-memory tag store and a fake origin cluster (unit tier).

FakeOrigins exists only for these tests: it implements the two ClusterClient calls the
docker tag type makes (stat, download) over a dict, and can play an unreachable ring."""

import json
from urllib.parse import quote

import pytest

from buildindex.app import create_app
from buildindex.config import BuildIndexConfig, ListingConfig
from buildindex.replication import Remotes, Replicator
from buildindex.tagstore import MemoryTagStore
from buildindex.tagtypes import DefaultTagType, DockerTagType, TagTypes
from common import oci
from common.digest import Digest
from common.errors import NotFound, Pending, Unavailable


class FakeResponse:
    def __init__(self, body: bytes):
        self.body = body
        self.closed = False

    def iter_content(self, size):
        for i in range(0, len(self.body), size):
            yield self.body[i : i + size]

    def close(self):
        self.closed = True


class FakeOrigins:
    def __init__(self):
        self.blobs: dict[Digest, bytes] = {}
        self.pending: set[Digest] = set()
        self.down = False
        self.namespaces: set[str] = set()

    def add(self, data: bytes) -> Digest:
        d = Digest.of_bytes(data)
        self.blobs[d] = data
        return d

    def _lookup(self, namespace, digest):
        self.namespaces.add(namespace)
        if self.down:
            raise Unavailable("no origin answered")
        if digest in self.pending:
            raise Pending(f"{digest} pending")
        if digest not in self.blobs:
            raise NotFound(f"{digest} not found")
        return self.blobs[digest]

    def stat(self, namespace, digest):
        return len(self._lookup(namespace, digest))

    def download(self, namespace, digest):
        return FakeResponse(self._lookup(namespace, digest))


def image_manifest(config: Digest, layers: list[Digest], media_type=oci.DOCKER_MANIFEST) -> bytes:
    desc = lambda d: {"mediaType": "application/octet-stream", "digest": str(d), "size": 1}  # noqa: E731
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": desc(config),
                       "layers": [desc(d) for d in layers]}).encode()


def index_manifest(children: list[Digest]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": oci.OCI_MANIFEST, "digest": str(d), "size": 1} for d in children]}).encode()


class Env:
    def __init__(self, rules=(), listing=None, remotes=None, send=None):
        self.origins = FakeOrigins()
        self.store = MemoryTagStore()
        self.sent = []
        # A fake clock that sleeping advances, so waiting out a pending manifest is instant.
        self.now = 0.0
        kinds = {"docker": DockerTagType(self.origins, pending_timeout=0.3, sleep=self._sleep,
                                         clock=lambda: self.now),
                 "default": DefaultTagType()}
        self.replicator = Replicator(Remotes(remotes or {}), send or (lambda *a: self.sent.append(a)),
                                     base_delay=0, workers=1)
        cfg = BuildIndexConfig(listing=listing or ListingConfig())
        self.app = create_app(cfg, tag_store=self.store, replicator=self.replicator,
                              tag_types=TagTypes([(p, kinds[t]) for p, t in rules], kinds["docker"]))
        self.c = self.app.test_client()

    def _sleep(self, seconds):
        self.now += seconds

    def image(self, n_layers=2) -> Digest:
        cfg = self.origins.add(b"config")
        layers = [self.origins.add(f"layer{i}".encode()) for i in range(n_layers)]
        return self.origins.add(image_manifest(cfg, layers))

    def put(self, ref, digest, **query):
        qs = "".join(f"&{k}={v}" for k, v in query.items()).replace("&", "?", 1)
        return self.c.put(f"/tags/{quote(ref, safe='')}/digest/{digest}{qs}")

    def get(self, ref):
        return self.c.get(f"/tags/{quote(ref, safe='')}")


@pytest.fixture
def env():
    e = Env()
    yield e
    e.replicator.stop(0)


def test_put_then_get_and_head_an_escaped_tag(env):
    d = env.image()
    assert env.put("library/busybox:1.36", d).status_code == 200
    resp = env.get("library/busybox:1.36")
    assert resp.status_code == 200 and resp.data.decode() == str(d)
    assert resp.mimetype == "text/plain"
    assert env.c.head("/tags/library%2Fbusybox:1.36").status_code == 200
    assert env.c.head("/tags/library%2Fbusybox:2").status_code == 404
    # The unescaped form reaches the same route.
    assert env.c.get("/tags/library/busybox:1.36").data.decode() == str(d)
    # The origin ring is asked under the repository as namespace.
    assert env.origins.namespaces == {"library/busybox"}


def test_unknown_tag_is_404_json(env):
    resp = env.get("library/busybox:nope")
    assert resp.status_code == 404 and "not found" in resp.get_json()["error"]


def test_a_tag_can_be_moved_to_another_digest(env):
    d1 = env.image(1)
    d2 = env.image(3)
    env.put("repo:latest", d1)
    env.put("repo:latest", d2)
    assert env.get("repo:latest").data.decode() == str(d2)


def test_repo_may_contain_digest_and_tags_path_words(env):
    d = env.image()
    assert env.put("x/digest/tags:1", d).status_code == 200
    assert env.get("x/digest/tags:1").data.decode() == str(d)
    assert env.c.get("/repositories/x/digest/tags/tags").get_json()["result"] == ["1"]


@pytest.mark.parametrize("ref", [
    "../../etc:passwd", "../../etc", "Library/busybox:1", "library/busybox:", "library/busybox",
    ":1", "library//busybox:1", "library/busybox:-bad", "library/busybox:t\u00e9", "a" * 256 + ":1",
    "library/busybox:" + "t" * 129, "library/busybox:1 2", "/abs:1",
])
def test_hostile_or_malformed_tags_are_400(env, ref):
    d = env.image()
    for resp in (env.put(ref, d), env.get(ref), env.c.post(f"/remotes/tags/{quote(ref, safe='')}")):
        assert resp.status_code in (400, 404, 405), (ref, resp.status_code)
        if resp.status_code != 404:
            assert resp.status_code == 400 and "error" in resp.get_json()
    assert env.store.list_repos("", offset=0, limit=100).items == []


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256:abc", "md5:" + "a" * 32,
                                    "sha512:" + "a" * 64, "%2E%2E", "sha256:" + "a" * 63 + "%00"])
def test_malformed_digests_are_400(env, digest):
    resp = env.c.put(f"/tags/repo:1/digest/{digest}")
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_docker_tag_needs_the_manifest_in_the_ring(env):
    missing = Digest.of_bytes(b"no such manifest")
    resp = env.put("repo:1", missing)
    assert resp.status_code == 400 and str(missing) in resp.get_json()["error"]
    not_manifest = env.origins.add(b"just a layer")
    resp = env.put("repo:1", not_manifest)
    assert resp.status_code == 400 and "manifest" in resp.get_json()["error"]
    assert env.get("repo:1").status_code == 404


def test_docker_tag_names_the_missing_blob(env):
    cfg = env.origins.add(b"config")
    layer = Digest.of_bytes(b"never uploaded")
    m = env.origins.add(image_manifest(cfg, [layer], oci.OCI_MANIFEST))
    resp = env.put("repo:1", m)
    assert resp.status_code == 400 and f"blob {layer}" in resp.get_json()["error"]
    env.origins.add(b"never uploaded")
    assert env.put("repo:1", m).status_code == 200


def test_docker_tag_missing_config_is_named(env):
    layer = env.origins.add(b"layer")
    cfg = Digest.of_bytes(b"absent config")
    m = env.origins.add(image_manifest(cfg, [layer]))
    assert str(cfg) in env.put("repo:1", m).get_json()["error"]


def test_docker_index_needs_every_manifest_and_their_blobs(env):
    amd64 = env.image(1)
    arm_layer = Digest.of_bytes(b"arm layer")
    arm64 = env.origins.add(image_manifest(env.origins.add(b"arm config"), [arm_layer], oci.OCI_MANIFEST))
    ghost = Digest.of_bytes(b"ghost manifest")
    idx = env.origins.add(index_manifest([amd64, arm64, ghost]))
    err = env.put("multi:1", idx).get_json()["error"]
    assert f"blob {arm_layer}" in err and f"manifest {ghost}" in err
    idx2 = env.origins.add(index_manifest([amd64, arm64]))
    assert env.put("multi:1", idx2).status_code == 400
    env.origins.add(b"arm layer")
    assert env.put("multi:1", idx2).status_code == 200


def test_docker_tag_counts_blobs_being_fetched_as_present(env):
    d = env.image(2)
    layer = Digest.of_bytes(b"layer1")
    env.origins.pending.add(layer)
    assert env.put("repo:1", d).status_code == 200


def test_manifest_still_pending_is_503(env):
    d = env.image()
    env.origins.pending.add(d)
    resp = env.put("repo:1", d)
    assert resp.status_code == 503 and "being fetched" in resp.get_json()["error"]


def test_unreachable_origins_are_503(env):
    d = env.image()
    env.origins.down = True
    assert env.put("repo:1", d).status_code == 503
    assert env.get("repo:1").status_code == 404


def test_default_type_accepts_any_digest_by_rule():
    e = Env(rules=[(r"^scratch/", "default"), (r":ci-\d+$", "default")])
    anything = Digest.of_bytes(b"not even in the ring")
    assert e.put("scratch/tool:1", anything).status_code == 200
    assert e.put("team/app:ci-42", anything).status_code == 200
    assert e.put("team/app:1", anything).status_code == 400


def test_repository_listing_pages(env):
    anything = Digest.of_bytes(b"x")
    e = Env(rules=[(".*", "default")], listing=ListingConfig(default_limit=3, max_limit=5))
    for i in range(8):
        e.put(f"library/busybox:{i}", anything)
    e.put("library/other:1", anything)
    body = e.c.get("/repositories/library/busybox/tags").get_json()
    assert body["size"] == 3 and body["result"] == ["0", "1", "2"]
    assert body["links"]["next"] == "/repositories/library/busybox/tags?limit=3&offset=3"
    assert body["links"]["self"] == "/repositories/library/busybox/tags?limit=3&offset=0"
    # The escaped form works too, and following `next` to the end gives each tag once.
    seen, url = [], "/repositories/library%2Fbusybox/tags?limit=5"
    while url:
        body = e.c.get(url).get_json()
        seen += body["result"]
        url = body["links"]["next"]
    assert seen == [str(i) for i in range(8)]
    end = e.c.get("/repositories/library/busybox/tags?limit=4&offset=4").get_json()
    assert end["result"] == ["4", "5", "6", "7"] and end["links"]["next"] == ""
    past = e.c.get("/repositories/library/busybox/tags?offset=50").get_json()
    assert past == {"size": 0, "result": [], "links": {"next": "", "self": past["links"]["self"]}}
    after = e.c.get("/repositories/library/busybox/tags?limit=2&last=4").get_json()
    assert after["result"] == ["5", "6"] and "last=4" in after["links"]["next"]
    unknown = e.c.get("/repositories/nobody/tags").get_json()
    assert unknown["size"] == 0 and unknown["result"] == []
    e.replicator.stop(0)


def test_prefix_listing_gives_repositories(env):
    anything = Digest.of_bytes(b"x")
    e = Env(rules=[(".*", "default")])
    for ref in ["library/busybox:1", "library/busybox:2", "library/alpine:3", "team/app:1"]:
        e.put(ref, anything)
    assert e.c.get("/list/library").get_json()["result"] == ["library/alpine", "library/busybox"]
    assert e.c.get("/list/library%2F").get_json()["result"] == ["library/alpine", "library/busybox"]
    assert e.c.get("/list/").get_json()["result"] == ["library/alpine", "library/busybox", "team/app"]
    page = e.c.get("/list/?limit=2&offset=1").get_json()
    assert page["result"] == ["library/busybox", "team/app"] and page["links"]["next"] == ""
    assert e.c.get("/list/?limit=1&last=library/busybox").get_json()["result"] == ["team/app"]
    e.replicator.stop(0)


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=1001", "limit=99999999999999999999",
                                   "limit=ten", "offset=-1", "offset=1.5", "offset=99999999999999"])
def test_bad_paging_is_400(env, query):
    for path in ("/repositories/library/busybox/tags", "/list/lib"):
        resp = env.c.get(f"{path}?{query}")
        assert resp.status_code == 400 and "error" in resp.get_json(), (path, query)


@pytest.mark.parametrize("path", ["/list/..%2F..%2Fetc", "/list/Library", "/list/lib%00", "/list/-x",
                                  "/repositories/..%2F..%2Fetc/tags", "/repositories/Library/tags",
                                  "/repositories/a%20b/tags", "/list/?last=..%2Fx",
                                  "/repositories/repo/tags?last=%2Fetc"])
def test_hostile_listing_input_is_400(env, path):
    resp = env.c.get(path)
    assert resp.status_code == 400 and "error" in resp.get_json()


def test_replicate_query_queues_matching_remotes():
    e = Env(rules=[(".*", "default")], remotes={"127.0.0.9:1": ["^library/"], "127.0.0.9:2": ["^team/"]})
    d = Digest.of_bytes(b"x")
    e.put("library/busybox:1", d, replicate="true")
    e.put("library/busybox:2", d)
    e.put("other/thing:1", d, replicate="true")
    assert e.replicator.wait_idle(5)
    assert e.sent == [("127.0.0.9:1", "library/busybox:1", d)]
    resp = e.c.post("/remotes/tags/library%2Fbusybox:2")
    assert resp.status_code == 200 and resp.get_json()["remotes"] == ["127.0.0.9:1"]
    assert e.replicator.wait_idle(5)
    assert e.sent[-1] == ("127.0.0.9:1", "library/busybox:2", d)
    assert e.c.post("/remotes/tags/library%2Fbusybox:3").status_code == 404
    e.replicator.stop(0)


def test_health_readiness_metrics(env):
    assert env.c.get("/health").status_code == 200
    assert env.c.get("/readiness").status_code == 200
    env.put("repo:1", env.image())
    body = env.c.get("/metrics").data.decode()
    assert 'kraken_buildindex_tag_puts_total{type="docker"} 1.0' in body
    assert "kraken_buildindex_replication_pending" in body


def test_readiness_names_redis_when_down():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from buildindex.tagstore import RedisTagStore

    # Nothing listens on port 1; no retries, so the refusal is immediate.
    dead = RedisTagStore(redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0)))
    app = create_app(BuildIndexConfig(), tag_store=dead, tag_types=TagTypes([], DefaultTagType()),
                     replicator=Replicator(Remotes({}), lambda *a: None))
    resp = app.test_client().get("/readiness")
    assert resp.status_code == 503 and "redis" in resp.get_json()["error"]


class FakeBackend:
    """Test-only stand-in for the storage-backend seam (backends come in a later issue)."""

    def __init__(self):
        self.tags = {}

    def put_tag(self, name, digest):
        self.tags[name] = digest

    def get_tag(self, name):
        if name not in self.tags:
            raise NotFound(name)
        return self.tags[name]


def test_backend_seam_writes_through_and_reads_back():
    backend = FakeBackend()
    store = MemoryTagStore()
    app = create_app(BuildIndexConfig(), tag_store=store, tag_types=TagTypes([], DefaultTagType()),
                     replicator=Replicator(Remotes({}), lambda *a: None), backend=backend)
    c = app.test_client()
    d = Digest.of_bytes(b"x")
    assert c.put(f"/tags/repo:1/digest/{d}").status_code == 200
    assert backend.tags == {"repo:1": d}
    backend.tags["repo:2"] = d  # Known to the backend only, as after losing Redis.
    assert c.get("/tags/repo:2").data.decode() == str(d)
    assert store.get("repo", "2") == d
