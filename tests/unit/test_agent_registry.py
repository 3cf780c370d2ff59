"""The agent's registry port and tag endpoints against in-memory fakes: build-index (the
shape of buildindex.client.BuildIndexClient) and a downloader whose blobs are files on
disk. The P2P path itself is covered by tests/integration/test_agent_registry.py."""

from __future__ import annotations

import json

import gevent
import pytest
from flask import Flask

from agent.app import create_registry_app
from agent.config import AgentConfig, ImagesConfig
from agent.dispatch import ByListener
from agent.images import Images
from agent.views import tags as tag_views
from common import config as configlib
from common import oci
from common.digest import Digest
from common.errors import ConfigError, NotFound
from common.httputil import install_error_handler


class FakeBuildIndex:
    """BuildIndexClient's reading half, in memory; counts get_tag calls."""

    def __init__(self, tags: dict[str, Digest] | None = None):
        self.tags = dict(tags or {})
        self.gets = 0

    def get_tag(self, tag: str) -> Digest:
        self.gets += 1
        try:
            return self.tags[tag]
        except KeyError:
            raise NotFound(f"tag {tag}") from None

    def list_repo(self, repo, limit=None, offset=None, last=None):
        names = sorted(t.rpartition(":")[2] for t in self.tags if t.rpartition(":")[0] == repo)
        if last:
            names = [n for n in names if n > last]
        offset = offset or 0
        limit = limit or 1000
        page = names[offset:offset + limit]
        return page, (offset + limit if offset + limit < len(names) else None)

    def ping(self) -> None:
        pass


class FakeDownloader:
    """Blobs are files under a directory; unknown digests are NotFound, as the tracker
    would report them."""

    def __init__(self, root):
        self.root = root
        self.ensured: list[tuple[str, Digest]] = []
        self.asked: list[Digest] = []

    def add(self, data: bytes) -> Digest:
        d = Digest.of_bytes(data)
        (self.root / d.hex).write_bytes(data)
        return d

    def get(self, namespace: str, digest: Digest):
        self.asked.append(digest)
        path = self.root / digest.hex
        if not path.exists():
            raise NotFound(f"blob {digest} not found")
        return path

    def ensure(self, namespace: str, digest: Digest):
        self.ensured.append((namespace, digest))
        return self.get(namespace, digest)


def _descriptor(media_type: str, d: Digest, size: int, **extra) -> dict:
    return {"mediaType": media_type, "digest": str(d), "size": size, **extra}


class Image:
    """One image: a config, two layers and a manifest of `media_type`, in `dl`."""

    def __init__(self, dl: FakeDownloader, media_type: str = oci.DOCKER_MANIFEST, seed: bytes = b""):
        self.config_bytes = b'{"architecture":"amd64","os":"linux"' + seed + b"}"
        self.layers = [b"layer one " + seed + b"x" * 1000, b"layer two " + seed]
        self.config = dl.add(self.config_bytes)
        self.layer_digests = [dl.add(b) for b in self.layers]
        layer_type = ("application/vnd.docker.image.rootfs.diff.tar.gzip" if media_type == oci.DOCKER_MANIFEST
                      else "application/vnd.oci.image.layer.v1.tar+gzip")
        config_type = ("application/vnd.docker.container.image.v1+json" if media_type == oci.DOCKER_MANIFEST
                       else "application/vnd.oci.image.config.v1+json")
        self.body = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "config": _descriptor(config_type, self.config, len(self.config_bytes)),
            "layers": [_descriptor(layer_type, d, len(b)) for d, b in zip(self.layer_digests, self.layers)],
        }).encode()
        self.digest = dl.add(self.body)
        self.media_type = media_type

    @property
    def blobs(self) -> list[Digest]:
        return [self.config, *self.layer_digests]


@pytest.fixture
def dl(tmp_path):
    return FakeDownloader(tmp_path)


@pytest.fixture
def index():
    return FakeBuildIndex()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def images(dl, index, clock):
    return Images(index, dl, ImagesConfig(tag_ttl=5.0), clock=clock)


@pytest.fixture
def client(dl, images):
    return create_registry_app(downloader=dl, images=images).test_client()


def _error(resp, code: str, status: int) -> dict:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    body = resp.get_json()
    assert body["errors"][0]["code"] == code, body
    return body["errors"][0]


def test_base_answers_with_the_api_version(client):
    for method in (client.get, client.head):
        resp = method("/v2/")
        assert resp.status_code == 200
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("media_type", [oci.DOCKER_MANIFEST, oci.OCI_MANIFEST])
def test_manifest_by_tag_and_digest_carries_digest_type_and_length(client, dl, index, media_type):
    img = Image(dl, media_type)
    index.tags["library/app:1.0"] = img.digest
    for ref in ("1.0", str(img.digest)):
        resp = client.get(f"/v2/library/app/manifests/{ref}")
        assert resp.status_code == 200
        assert resp.data == img.body
        assert resp.headers["Content-Type"] == media_type
        assert resp.headers["Docker-Content-Digest"] == str(img.digest)
        assert resp.headers["Content-Length"] == str(len(img.body))
        assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        head = client.head(f"/v2/library/app/manifests/{ref}")
        assert head.status_code == 200 and head.data == b""
        assert head.headers["Content-Length"] == str(len(img.body))
        assert head.headers["Content-Type"] == media_type
        assert head.headers["Docker-Content-Digest"] == str(img.digest)


def test_an_index_is_served_as_it_is(client, dl, index):
    amd, arm = Image(dl, oci.OCI_MANIFEST, b"amd"), Image(dl, oci.OCI_MANIFEST, b"arm")
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        _descriptor(oci.OCI_MANIFEST, amd.digest, len(amd.body), platform={"architecture": "amd64"}),
        _descriptor(oci.OCI_MANIFEST, arm.digest, len(arm.body), platform={"architecture": "arm64"}),
    ]}, indent=1).encode()
    d = dl.add(body)
    index.tags["multi:latest"] = d
    resp = client.get("/v2/multi/manifests/latest", headers={"Accept": oci.DOCKER_MANIFEST})
    assert resp.status_code == 200 and resp.data == body
    assert resp.headers["Content-Type"] == oci.OCI_INDEX
    assert Digest.of_bytes(resp.data) == d


def test_unknown_manifests_and_blobs_answer_in_the_envelope(client, dl, index):
    layer = dl.add(b"just a layer")
    index.tags["app:gone"] = Digest.of_bytes(b"never uploaded")
    _error(client.get("/v2/app/manifests/nope"), "MANIFEST_UNKNOWN", 404)
    _error(client.get("/v2/app/manifests/gone"), "MANIFEST_UNKNOWN", 404)
    _error(client.get(f"/v2/app/manifests/{Digest.of_bytes(b'x')}"), "MANIFEST_UNKNOWN", 404)
    # A blob that is not a manifest is not served as one.
    _error(client.get(f"/v2/app/manifests/{layer}"), "MANIFEST_UNKNOWN", 404)
    _error(client.get(f"/v2/app/blobs/{Digest.of_bytes(b'y')}"), "BLOB_UNKNOWN", 404)
    head = client.head(f"/v2/app/blobs/{Digest.of_bytes(b'y')}")
    assert head.status_code == 404 and head.data == b""


def test_blobs_honour_range(client, dl):
    data = bytes(range(256)) * 40
    d = dl.add(data)
    resp = client.get(f"/v2/some/repo/blobs/{d}")
    assert resp.status_code == 200 and resp.data == data
    assert resp.headers["Docker-Content-Digest"] == str(d)
    part = client.get(f"/v2/some/repo/blobs/{d}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    err = _error(client.get(f"/v2/some/repo/blobs/{d}", headers={"Range": f"bytes={len(data) + 5}-"}),
                 "RANGE_INVALID", 416)
    assert err["message"]
    head = client.head(f"/v2/some/repo/blobs/{d}")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))


@pytest.mark.parametrize("path, code", [
    ("/v2/%2E%2E/%2E%2E/etc/manifests/latest", "NAME_INVALID"),
    ("/v2/Library/App/manifests/latest", "NAME_INVALID"),
    ("/v2/UPPER/blobs/sha256:" + "a" * 64, "NAME_INVALID"),
    ("/v2/ok/blobs/sha256:XYZ", "DIGEST_INVALID"),
    ("/v2/ok/blobs/md5:" + "a" * 32, "DIGEST_INVALID"),
    ("/v2/ok/manifests/sha256:short", "DIGEST_INVALID"),
    ("/v2/ok/manifests/-bad-tag", "TAG_INVALID"),
    ("/v2/ok/manifests/t%C3%BC", "TAG_INVALID"),
    ("/v2/ok/tags/list?last=t%C3%BC", "TAG_INVALID"),
    ("/v2/ok/tags/list?n=-1", "PAGINATION_NUMBER_INVALID"),
    ("/v2/ok/tags/list?n=abc", "PAGINATION_NUMBER_INVALID"),
    ("/v2/ok/nothing-here", "NAME_UNKNOWN"),
])
def test_bad_requests_are_refused_in_the_envelope(client, path, code):
    resp = client.get(path)
    _error(resp, code, oci.CODES[code][0] if code != "NAME_UNKNOWN" else 404)


@pytest.mark.parametrize("method, path", [
    ("PUT", "/v2/app/manifests/latest"),
    ("DELETE", "/v2/app/manifests/latest"),
    ("POST", "/v2/app/blobs/uploads/"),
    ("PATCH", "/v2/app/blobs/uploads/1234"),
    ("PUT", "/v2/app/blobs/uploads/1234?digest=sha256:" + "a" * 64),
    ("GET", "/v2/app/blobs/uploads/1234"),
    ("DELETE", "/v2/app/blobs/sha256:" + "a" * 64),
    ("POST", "/v2/"),
])
def test_writes_are_unsupported(client, method, path):
    _error(client.open(path, method=method, data=b"x"), "UNSUPPORTED", 405)


def test_tags_list_pages_with_n_and_last(client, index):
    d = Digest.of_bytes(b"m")
    for t in ("a", "b", "c", "d", "e"):
        index.tags[f"team/app:{t}"] = d
    index.tags["team/other:z"] = d
    resp = client.get("/v2/team/app/tags/list")
    assert resp.get_json() == {"name": "team/app", "tags": ["a", "b", "c", "d", "e"]}
    assert "Link" not in resp.headers
    seen, url = [], "/v2/team/app/tags/list?n=2"
    while url:
        resp = client.get(url)
        assert resp.status_code == 200
        seen.append(resp.get_json()["tags"])
        link = resp.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('rel="next"')
    assert seen == [["a", "b"], ["c", "d"], ["e"]]
    assert client.get("/v2/team/app/tags/list?last=e").get_json()["tags"] == []
    assert client.get("/v2/team/app/tags/list?n=0").get_json()["tags"] == []
    _error(client.get("/v2/team/unknown/tags/list"), "NAME_UNKNOWN", 404)


def test_tags_are_cached_briefly(client, dl, index, clock):
    img = Image(dl)
    index.tags["app:1"] = img.digest
    client.head("/v2/app/manifests/1")
    client.get("/v2/app/manifests/1")
    assert index.gets == 1
    newer = Image(dl, seed=b"2")
    index.tags["app:1"] = newer.digest
    clock.now += 6
    assert client.get("/v2/app/manifests/1").headers["Docker-Content-Digest"] == str(newer.digest)
    assert index.gets == 2


def test_without_a_tag_cache_every_request_asks_build_index(dl, index):
    img = Image(dl)
    index.tags["app:1"] = img.digest
    c = create_registry_app(downloader=dl, images=Images(index, dl, ImagesConfig(tag_ttl=0))).test_client()
    for _ in range(3):
        assert c.get("/v2/app/manifests/1").status_code == 200
    assert index.gets == 3


def test_without_build_index_tags_are_unavailable(dl):
    c = create_registry_app(downloader=dl, images=Images(None, dl, ImagesConfig())).test_client()
    _error(c.get("/v2/app/manifests/1"), "UNAVAILABLE", 503)


# Server port: tags and preloads.

@pytest.fixture
def server(images):
    app = Flask("agent-test")
    app.extensions["images"] = images
    install_error_handler(app)
    app.register_blueprint(tag_views.bp)
    return app.test_client()


def test_server_port_resolves_tags_as_text(server, dl, index):
    img = Image(dl)
    index.tags["library/app:1.0"] = img.digest
    resp = server.get("/tags/library%2Fapp:1.0")
    assert resp.status_code == 200 and resp.get_data(as_text=True) == str(img.digest)
    assert server.get("/tags/library%2Fapp:2.0").status_code == 404
    assert server.get("/tags/notatag").status_code == 400


def test_preload_fetches_every_platforms_manifest_and_blobs(server, dl, index):
    amd, arm = Image(dl, oci.OCI_MANIFEST, b"amd"), Image(dl, oci.OCI_MANIFEST, b"arm")
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        _descriptor(oci.OCI_MANIFEST, amd.digest, len(amd.body)),
        _descriptor(oci.OCI_MANIFEST, arm.digest, len(arm.body)),
    ]}).encode()
    index.tags["multi:1"] = dl.add(body)
    resp = server.post("/preload/tags/multi:1")
    assert resp.status_code == 202
    assert resp.get_json()["digest"] == str(Digest.of_bytes(body))
    gevent.sleep(0.1)
    assert sorted(d for _, d in dl.ensured) == sorted(amd.blobs + arm.blobs)
    assert {ns for ns, _ in dl.ensured} == {"multi"}
    assert server.post("/preload/tags/multi:2").status_code == 404


# Wiring.

class _Sock:
    def __init__(self, port):
        self.port = port

    def getsockname(self):
        return ("127.0.0.1", self.port)


def _app(name):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [name.encode()]
    return app


def test_requests_go_to_the_app_of_the_port_they_arrived_on():
    wsgi = ByListener(_app("server"), {7607: _app("registry")})

    def call(environ):
        return b"".join(wsgi(environ, lambda *a: None))

    assert call({"SERVER_PORT": "7607"}) == b"registry"
    assert call({"SERVER_PORT": "7605"}) == b"server"
    # The accepted socket wins over SERVER_PORT (and never the Host header).
    assert call({"SERVER_PORT": "7607", "HTTP_HOST": "x:7607", "gunicorn.socket": _Sock(7605)}) == b"server"
    assert call({"SERVER_PORT": "7605", "gunicorn.socket": _Sock(7607)}) == b"registry"


def test_registry_port_config():
    cfg = configlib.build(AgentConfig, {"registry": {"host": "127.0.0.9"}, "build_index": ["a:1", "b:2"]})
    assert cfg.registry.port == 7607 and cfg.registry.addr == "127.0.0.9:7607"
    assert cfg.build_index == ("a:1", "b:2")
    with pytest.raises(ConfigError):
        configlib.build(AgentConfig, {"server": {"port": 7000}, "registry": {"port": 7000}})
    from agent.cmd import binds

    assert binds(configlib.build(AgentConfig, {"registry": {"port": 0}})) == ["127.0.0.1:7605"]
    assert binds(AgentConfig()) == ["127.0.0.1:7605", "127.0.0.1:7607"]


def test_get_of_an_image_manifest_starts_every_blob_download_head_does_not(client, dl, index):
    image = Image(dl)
    index.tags["library/app:1"] = image.digest
    dl.asked.clear()
    assert client.head("/v2/library/app/manifests/1").status_code == 200
    assert set(dl.asked) == {image.digest}
    dl.asked.clear()
    assert client.get("/v2/library/app/manifests/1").status_code == 200
    assert set(dl.asked) == {image.digest, *image.blobs}
