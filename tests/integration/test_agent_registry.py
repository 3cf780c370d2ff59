"""The agent's registry port and tag endpoints with real processes: images uploaded straight
to the origins, tagged in build-index, pulled through agents over P2P."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl

import pytest
import requests

from common import oci
from common.digest import Digest
from tests.integration.helpers import put_tag, registry_url, upload, wait_for

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def _token() -> str:
    return os.urandom(4).hex()


class Image:
    """A config, layers and a manifest, uploaded to the origins under the repository's
    namespace."""

    def __init__(self, cluster, tmp_path, repo: str, media_type: str = oci.DOCKER_MANIFEST,
                 layer_sizes=(300 << 10, 2 << 20), arch: str = "amd64"):
        docker = media_type == oci.DOCKER_MANIFEST
        self.repo = repo
        self.config_bytes = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"},
                                        "nonce": _token()}).encode()
        self.layers = [os.urandom(n) for n in layer_sizes]
        self.config = upload(cluster, self.config_bytes, tmp_path, repo)
        self.layer_digests = [upload(cluster, b, tmp_path, repo) for b in self.layers]
        self.body = json.dumps({
            "schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": str(self.config),
                       "size": len(self.config_bytes)},
            "layers": [{"mediaType": DOCKER_LAYER if docker else OCI_LAYER, "digest": str(d), "size": len(b)}
                       for d, b in zip(self.layer_digests, self.layers)],
        }, indent=3).encode()
        self.digest = upload(cluster, self.body, tmp_path, repo)
        self.media_type = media_type

    @property
    def blobs(self) -> list[Digest]:
        return [self.config, *self.layer_digests]


def _index(cluster, tmp_path, repo: str, images: list[Image]) -> tuple[bytes, Digest]:
    body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {"mediaType": img.media_type, "digest": str(img.digest), "size": len(img.body),
         "platform": {"os": "linux", "architecture": arch}}
        for img, arch in zip(images, ("amd64", "arm64", "s390x"))
    ]}).encode()
    return body, upload(cluster, body, tmp_path, repo)


def _check_error(resp: requests.Response, code: str, status: int) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers[API_VERSION[0]] == API_VERSION[1]
    if resp.request.method != "HEAD":
        assert resp.json()["errors"][0]["code"] == code, resp.text


def _raw_get(addr: str, path: str) -> tuple[int, dict]:
    """A GET whose path is sent exactly as given (requests would resolve `..`)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def test_agent_registry_base_answers_with_the_api_version(cluster):
    for i, _ in enumerate(cluster.agents):
        for method in ("GET", "HEAD"):
            resp = requests.request(method, registry_url(cluster, i, "/v2/"), timeout=10)
            assert resp.status_code == 200
            assert resp.headers[API_VERSION[0]] == API_VERSION[1]


def test_agent_registry_serves_a_docker_manifest_by_tag_and_digest_over_p2p(cluster, tmp_path):
    repo = f"library/app-{_token()}"
    img = Image(cluster, tmp_path, repo)
    put_tag(cluster, f"{repo}:1.0", img.digest)
    for ref in ("1.0", str(img.digest)):
        url = registry_url(cluster, 0, f"/v2/{repo}/manifests/{ref}")
        head = requests.head(url, timeout=30)
        assert head.status_code == 200, head.text
        assert head.headers["Content-Type"] == oci.DOCKER_MANIFEST
        assert head.headers["Docker-Content-Digest"] == str(img.digest)
        assert head.headers["Content-Length"] == str(len(img.body))
        assert head.headers[API_VERSION[0]] == API_VERSION[1]
        get = requests.get(url, timeout=30, headers={"Accept": oci.DOCKER_MANIFEST})
        assert get.status_code == 200
        assert get.content == img.body
        assert get.headers["Content-Type"] == oci.DOCKER_MANIFEST
        assert get.headers["Docker-Content-Digest"] == str(img.digest)
    # The manifest travelled as a blob and is in the agent's cache now.
    status = requests.get(f"http://{cluster.agents[0]['server']}/blobs/{img.digest}/status", timeout=10).json()
    assert status["state"] == "cached"
    for d, data in zip(img.blobs, [img.config_bytes, *img.layers]):
        resp = requests.get(registry_url(cluster, 0, f"/v2/{repo}/blobs/{d}"), timeout=60)
        assert resp.status_code == 200 and resp.content == data
        assert resp.headers["Docker-Content-Digest"] == str(d)


def test_agent_registry_serves_oci_manifests_and_an_index_as_is(cluster, tmp_path):
    repo = f"multi/arch-{_token()}"
    amd = Image(cluster, tmp_path, repo, oci.OCI_MANIFEST, layer_sizes=(64 << 10,), arch="amd64")
    arm = Image(cluster, tmp_path, repo, oci.OCI_MANIFEST, layer_sizes=(64 << 10,), arch="arm64")
    body, digest = _index(cluster, tmp_path, repo, [amd, arm])
    put_tag(cluster, f"{repo}:v1", digest)
    url = registry_url(cluster, 1, f"/v2/{repo}/manifests/v1")
    resp = requests.get(url, timeout=30, headers={"Accept": oci.DOCKER_MANIFEST})
    assert resp.status_code == 200, resp.text
    assert resp.content == body
    assert resp.headers["Content-Type"] == oci.OCI_INDEX
    assert resp.headers["Docker-Content-Digest"] == str(digest)
    head = requests.head(url, timeout=30)
    assert head.headers["Content-Type"] == oci.OCI_INDEX and head.headers["Content-Length"] == str(len(body))
    for img in (amd, arm):
        resp = requests.get(registry_url(cluster, 1, f"/v2/{repo}/manifests/{img.digest}"), timeout=30)
        assert resp.status_code == 200 and resp.content == img.body
        assert resp.headers["Content-Type"] == oci.OCI_MANIFEST


def test_agent_registry_blobs_honour_range_while_streaming_and_from_cache(cluster, tmp_path):
    repo = f"ranges/r-{_token()}"
    data = os.urandom(3 << 20)
    d = upload(cluster, data, tmp_path, repo)
    url = registry_url(cluster, 2, f"/v2/{repo}/blobs/{d}")
    # Not cached yet: the range is served from the download as it arrives.
    part = requests.get(url, headers={"Range": "bytes=1000-1999999"}, timeout=60)
    assert part.status_code == 206, part.text
    assert part.content == data[1000:2000000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999999/{len(data)}"
    assert part.headers["Docker-Content-Digest"] == str(d)
    wait_for(lambda: requests.get(f"http://{cluster.agents[2]['server']}/blobs/{d}/status",
                                  timeout=5).json()["state"] == "cached", 60, "the blob in the cache")
    tail = requests.get(url, headers={"Range": "bytes=-100"}, timeout=30)
    assert tail.status_code == 206 and tail.content == data[-100:]
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    _check_error(requests.get(url, headers={"Range": f"bytes={len(data) + 10}-"}, timeout=30), "RANGE_INVALID", 416)


def test_agent_registry_lists_tags_with_paging(cluster, tmp_path):
    repo = f"paged/repo-{_token()}"
    img = Image(cluster, tmp_path, repo, layer_sizes=(1 << 10,))
    tags = ["1.0", "1.1", "2.0", "beta", "latest"]
    for t in tags:
        put_tag(cluster, f"{repo}:{t}", img.digest)
    full = requests.get(registry_url(cluster, 3, f"/v2/{repo}/tags/list"), timeout=10)
    assert full.status_code == 200
    assert full.json() == {"name": repo, "tags": tags}
    assert full.headers[API_VERSION[0]] == API_VERSION[1]
    pages, path = [], f"/v2/{repo}/tags/list?n=2"
    while path:
        resp = requests.get(registry_url(cluster, 3, path), timeout=10)
        assert resp.status_code == 200
        pages.append(resp.json()["tags"])
        link = resp.headers.get("Link")
        path = link[1:link.index(">")] if link else None
    assert pages == [["1.0", "1.1"], ["2.0", "beta"], ["latest"]]
    after = requests.get(registry_url(cluster, 3, f"/v2/{repo}/tags/list?last=beta"), timeout=10)
    assert after.json()["tags"] == ["latest"]
    _check_error(requests.get(registry_url(cluster, 3, f"/v2/{repo}-none/tags/list"), timeout=10), "NAME_UNKNOWN", 404)


@pytest.mark.parametrize("method, path", [
    ("PUT", "/v2/app/manifests/latest"),
    ("DELETE", "/v2/app/manifests/latest"),
    ("POST", "/v2/app/blobs/uploads/"),
    ("PATCH", "/v2/app/blobs/uploads/abc"),
    ("PUT", "/v2/app/blobs/uploads/abc?digest=sha256:" + "0" * 64),
    ("DELETE", "/v2/app/blobs/sha256:" + "0" * 64),
])
def test_agent_registry_refuses_writes(cluster, method, path):
    resp = requests.request(method, registry_url(cluster, 0, path), data=b"{}", timeout=10)
    _check_error(resp, "UNSUPPORTED", 405)


def test_agent_registry_errors_use_the_oci_envelope(cluster, tmp_path):
    repo = f"errors/e-{_token()}"
    layer = upload(cluster, os.urandom(1000), tmp_path, repo)
    get = lambda path: requests.get(registry_url(cluster, 4, path), timeout=30)  # noqa: E731
    _check_error(get(f"/v2/{repo}/manifests/nope"), "MANIFEST_UNKNOWN", 404)
    _check_error(get(f"/v2/{repo}/manifests/sha256:{'1' * 64}"), "MANIFEST_UNKNOWN", 404)
    _check_error(get(f"/v2/{repo}/manifests/{layer}"), "MANIFEST_UNKNOWN", 404)
    _check_error(get(f"/v2/{repo}/blobs/sha256:{'2' * 64}"), "BLOB_UNKNOWN", 404)
    _check_error(requests.head(registry_url(cluster, 4, f"/v2/{repo}/blobs/sha256:{'2' * 64}"), timeout=30),
                 "BLOB_UNKNOWN", 404)
    _check_error(get(f"/v2/{repo}/blobs/sha256:nothex"), "DIGEST_INVALID", 400)
    _check_error(get(f"/v2/{repo}/blobs/md5:{'0' * 32}"), "DIGEST_INVALID", 400)
    _check_error(get("/v2/Upper/Case/manifests/latest"), "NAME_INVALID", 400)
    for path in ("/v2/../../etc/manifests/latest", "/v2/%2E%2E/%2E%2E/etc/blobs/sha256:" + "0" * 64):
        status, body = _raw_get(cluster.agents[4]["registry"], path)
        assert status == 400 and body["errors"][0]["code"] == "NAME_INVALID", (path, body)


def test_agent_registry_drops_a_tls_hello_and_serves_plain_http_next(cluster):
    addr = cluster.agents[5]["registry"]
    host, port = addr.rsplit(":", 1)
    hello = _client_hello()
    for probe in (hello, hello[:5]):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(probe)
            try:
                # Closed at once (a reset, as the hello is left unread), never an HTTP answer.
                assert s.recv(4096) == b""
            except ConnectionResetError:
                pass
        resp = requests.get(f"http://{addr}/v2/", timeout=10)
        assert resp.status_code == 200 and resp.headers[API_VERSION[0]] == API_VERSION[1]


def test_agent_ports_are_told_apart_by_listener_not_host_header(cluster):
    agent = cluster.agents[5]
    # The server port does not serve /v2 whatever Host says, and the registry port no blobs API.
    resp = requests.get(f"http://{agent['server']}/v2/", headers={"Host": agent["registry"]}, timeout=10)
    assert resp.status_code == 404 and "errors" not in resp.json()
    resp = requests.get(f"http://{agent['registry']}/blobs/sha256:{'0' * 64}/status",
                        headers={"Host": agent["server"]}, timeout=10)
    assert resp.status_code == 404


def test_agent_server_port_resolves_tags(cluster, tmp_path):
    repo = f"tags/t-{_token()}"
    img = Image(cluster, tmp_path, repo, layer_sizes=(1 << 10,))
    put_tag(cluster, f"{repo}:stable", img.digest)
    server = cluster.agents[1]["server"]
    resp = requests.get(f"http://{server}/tags/{repo.replace('/', '%2F')}:stable", timeout=10)
    assert resp.status_code == 200 and resp.text == str(img.digest)
    assert requests.get(f"http://{server}/tags/{repo.replace('/', '%2F')}:other", timeout=10).status_code == 404


def _cached(server: str, d: Digest) -> bool:
    return requests.get(f"http://{server}/blobs/{d}/status", timeout=5).json()["state"] == "cached"


def test_agent_preload_fetches_every_platforms_manifest_and_blobs(cluster, tmp_path):
    repo = f"preload/p-{_token()}"
    amd = Image(cluster, tmp_path, repo, oci.OCI_MANIFEST, layer_sizes=(1 << 20, 100 << 10), arch="amd64")
    arm = Image(cluster, tmp_path, repo, oci.OCI_MANIFEST, layer_sizes=(1 << 20,), arch="arm64")
    _, digest = _index(cluster, tmp_path, repo, [amd, arm])
    put_tag(cluster, f"{repo}:1", digest)
    server = cluster.agents[3]["server"]
    wanted = [digest, amd.digest, arm.digest, *amd.blobs, *arm.blobs]
    assert not any(_cached(server, d) for d in wanted)
    resp = requests.post(f"http://{server}/preload/tags/{repo.replace('/', '%2F')}:1", timeout=10)
    assert resp.status_code == 202, resp.text
    assert resp.json()["digest"] == str(digest)
    wait_for(lambda: all(_cached(server, d) for d in wanted), 60, "the whole image in the agent's cache")
    # Then a pull is served from the cache.
    layer = requests.get(registry_url(cluster, 3, f"/v2/{repo}/blobs/{arm.layer_digests[0]}"), timeout=10)
    assert layer.content == arm.layers[0]
    missing = requests.post(f"http://{server}/preload/tags/{repo.replace('/', '%2F')}:2", timeout=10)
    assert missing.status_code == 404
