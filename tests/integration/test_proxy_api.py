"""The proxy's registry API over HTTP: a real proxy (gunicorn, 2 gevent workers sharing the
upload state on disk) in front of the real origin ring and a real build-index."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys

import pytest
import requests
import yaml

from common.devcluster import Proc, free_port
from common.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

ZERO = "sha256:" + "0" * 64
MiB = 1 << 20


@pytest.fixture(scope="module")
def proxy(cluster, tmp_path_factory):
    """The dev cluster's proxy when it has one; else a build-index and a proxy started here
    against the cluster's redis and origins."""
    addr = getattr(cluster, "proxy", None)
    if isinstance(addr, str) and addr:
        yield addr
        return
    workdir = tmp_path_factory.mktemp("proxy")
    ring = {"members": cluster.origins, "replicas": cluster.replicas}
    bi_addr = f"127.0.0.1:{free_port()}"
    px_addr = f"127.0.0.1:{free_port()}"

    def proc(kind: str, addr: str, data: dict) -> Proc:
        host, port = addr.split(":")
        data = {"server": {"host": host, "port": int(port)}, **data, "log": {"level": "INFO"}}
        cfg = workdir / f"{kind}.yaml"
        cfg.write_text(yaml.safe_dump(data))
        return Proc(kind, [sys.executable, "-m", kind, "--config", str(cfg)], workdir / f"{kind}.log", addr)

    procs = [
        proc("buildindex", bi_addr, {"redis": {"addr": cluster.redis_addr}, "origins": ring}),
        proc("proxy", px_addr, {"origins": ring, "build_index": [bi_addr],
                                "uploads": {"dir": str(workdir / "uploads")}}),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for p in procs:
            p.start(env)
        for p in procs:
            _wait_healthy(p)
        yield px_addr
    finally:
        for p in reversed(procs):
            p.stop()


def _wait_healthy(p: Proc, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.alive(), f"{p.name} exited:\n{p.log_path.read_text()[-3000:]}"
        try:
            if requests.get(f"http://{p.addr}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{p.name} not healthy after {timeout}s")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def codes(resp) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


def url(proxy: str, path: str) -> str:
    return f"http://{proxy}{path}"


def push(proxy: str, name: str, data: bytes) -> str:
    d = sha(data)
    r = requests.post(url(proxy, f"/v2/{name}/blobs/uploads/"), params={"digest": d}, data=data, timeout=30)
    assert r.status_code == 201, r.text
    return d


def push_image(proxy: str, name: str, media_type: str, layers: list[bytes]) -> bytes:
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    docker = media_type == DOCKER_MANIFEST
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": "application/vnd.docker.container.image.v1+json" if docker
                      else "application/vnd.oci.image.config.v1+json",
                      "digest": push(proxy, name, config), "size": len(config)},
           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker
                       else "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": push(proxy, name, layer), "size": len(layer)} for layer in layers]}
    return json.dumps(doc, indent=3).encode()


def test_base_endpoint(proxy):
    r = requests.get(url(proxy, "/v2/"), timeout=5)
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_chunked_upload_across_workers_then_get_head_and_range(proxy):
    data = os.urandom(3 * MiB + 12345)
    r = requests.post(url(proxy, "/v2/it/chunked/blobs/uploads/"), timeout=5)
    assert r.status_code == 202 and r.headers["Range"] == "0-0"
    loc = url(proxy, r.headers["Location"])
    chunk = MiB
    for off in range(0, len(data), chunk):
        body = data[off:off + chunk]
        # A new connection per chunk, so the two workers take turns with the upload.
        r = requests.patch(loc, data=body, timeout=30,
                           headers={"Content-Range": f"{off}-{off + len(body) - 1}",
                                    "Content-Type": "application/octet-stream", "Connection": "close"})
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{off + len(body) - 1}"
    r = requests.get(loc, timeout=5)
    assert r.status_code == 204 and r.headers["Range"] == f"0-{len(data) - 1}"
    d = sha(data)
    r = requests.put(loc, params={"digest": d}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v2/it/chunked/blobs/{d}" and r.headers["Docker-Content-Digest"] == d
    r = requests.head(url(proxy, f"/v2/it/chunked/blobs/{d}"), timeout=5)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(data)
    assert r.headers["Docker-Content-Digest"] == d
    r = requests.get(url(proxy, f"/v2/it/chunked/blobs/{d}"), timeout=30)
    assert r.status_code == 200 and r.content == data
    r = requests.get(url(proxy, f"/v2/it/chunked/blobs/{d}"), headers={"Range": f"bytes={MiB}-{MiB + 99}"}, timeout=30)
    assert r.status_code == 206 and r.content == data[MiB:MiB + 100]
    assert r.headers["Content-Range"] == f"bytes {MiB}-{MiB + 99}/{len(data)}"
    assert codes(requests.get(loc, timeout=5)) == ["BLOB_UPLOAD_UNKNOWN"]


def test_streamed_patch_like_docker(proxy):
    data = os.urandom(2 * MiB + 7)
    loc = url(proxy, requests.post(url(proxy, "/v2/it/streamed/blobs/uploads/"), timeout=5).headers["Location"])

    def body():  # chunked transfer encoding, no Content-Range, no Content-Length
        for off in range(0, len(data), 256 * 1024):
            yield data[off:off + 256 * 1024]

    r = requests.patch(loc, data=body(), timeout=30)
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}"
    r = requests.put(loc, params={"digest": sha(data)}, timeout=60)
    assert r.status_code == 201
    assert requests.get(url(proxy, f"/v2/it/streamed/blobs/{sha(data)}"), timeout=30).content == data


def test_monolithic_post_and_put(proxy):
    data = os.urandom(100_000)
    d = push(proxy, "it/mono", data)
    assert requests.get(url(proxy, f"/v2/it/mono/blobs/{d}"), timeout=10).content == data
    data2 = os.urandom(5000)
    loc = url(proxy, requests.post(url(proxy, "/v2/it/mono/blobs/uploads/"), timeout=5).headers["Location"])
    r = requests.put(loc, params={"digest": sha(data2)}, data=data2, timeout=30)
    assert r.status_code == 201
    r = requests.head(url(proxy, f"/v2/it/mono/blobs/{sha(data2)}"), timeout=5)
    assert r.headers["Content-Length"] == "5000"


def test_out_of_order_chunk_is_416_and_upload_resumes(proxy):
    data = os.urandom(300_000)
    loc = url(proxy, requests.post(url(proxy, "/v2/it/resume/blobs/uploads/"), timeout=5).headers["Location"])
    assert requests.patch(loc, data=data[:100_000], headers={"Content-Range": "0-99999"}, timeout=10).status_code == 202
    r = requests.patch(loc, data=data[200_000:], headers={"Content-Range": "200000-299999"}, timeout=10)
    assert r.status_code == 416 and codes(r) == ["RANGE_INVALID"]
    # The client asks where the upload is and goes on from there.
    r = requests.get(loc, timeout=5)
    assert r.status_code == 204 and r.headers["Range"] == "0-99999"
    assert requests.patch(loc, data=data[100_000:200_000], headers={"Content-Range": "100000-199999"},
                          timeout=10).status_code == 202
    assert requests.patch(loc, data=data[200_000:], headers={"Content-Range": "200000-299999"},
                          timeout=10).status_code == 202
    assert requests.put(loc, params={"digest": sha(data)}, timeout=30).status_code == 201
    assert requests.get(url(proxy, f"/v2/it/resume/blobs/{sha(data)}"), timeout=10).content == data


def test_digest_mismatch_leaves_nothing_visible(proxy, cluster):
    data = os.urandom(50_000)
    loc = url(proxy, requests.post(url(proxy, "/v2/it/bad/blobs/uploads/"), timeout=5).headers["Location"])
    requests.patch(loc, data=data, timeout=10)
    wrong = sha(b"something else")
    r = requests.put(loc, params={"digest": wrong}, timeout=10)
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    for d in (wrong, sha(data)):
        r = requests.head(url(proxy, f"/v2/it/bad/blobs/{d}"), timeout=5)
        assert r.status_code == 404
        for origin in cluster.origins:
            assert requests.head(f"http://{origin}/namespace/it%2Fbad/blobs/{d}", timeout=5).status_code == 404
    assert codes(requests.get(loc, timeout=5)) == ["BLOB_UPLOAD_UNKNOWN"]


def test_cancel_upload(proxy):
    loc = url(proxy, requests.post(url(proxy, "/v2/it/cancel/blobs/uploads/"), timeout=5).headers["Location"])
    requests.patch(loc, data=b"abc", timeout=5)
    assert requests.delete(loc, timeout=5).status_code == 204
    r = requests.get(loc, timeout=5)
    assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]


def test_cross_repository_mount(proxy):
    d = push(proxy, "it/mount-src", os.urandom(10_000))
    r = requests.post(url(proxy, "/v2/it/mount-dst/blobs/uploads/"), params={"mount": d, "from": "it/mount-src"},
                      timeout=5)
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/it/mount-dst/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    r = requests.post(url(proxy, "/v2/it/mount-dst/blobs/uploads/"), params={"mount": ZERO, "from": "it/mount-src"},
                      timeout=5)
    assert r.status_code == 202 and r.headers["Docker-Upload-UUID"]


def test_unknown_blob_and_delete(proxy):
    r = requests.get(url(proxy, f"/v2/it/x/blobs/{ZERO}"), timeout=5)
    assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]
    r = requests.delete(url(proxy, f"/v2/it/x/blobs/{ZERO}"), timeout=5)
    assert r.status_code == 405 and codes(r) == ["UNSUPPORTED"]


def test_manifests_of_every_media_type(proxy):
    name = "it/images"
    children = {}
    for mt in (OCI_MANIFEST, DOCKER_MANIFEST):
        body = push_image(proxy, name, mt, [os.urandom(20_000), os.urandom(30_000)])
        tag = "oci" if mt == OCI_MANIFEST else "docker"
        r = requests.put(url(proxy, f"/v2/{name}/manifests/{tag}"), data=body, headers={"Content-Type": mt}, timeout=10)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == sha(body)
        assert r.headers["Location"] == f"/v2/{name}/manifests/{sha(body)}"
        children[mt] = body
    for list_type, child_type, tag in ((OCI_INDEX, OCI_MANIFEST, "oci-index"), (DOCKER_LIST, DOCKER_MANIFEST, "list")):
        child = children[child_type]
        doc = {"schemaVersion": 2, "mediaType": list_type, "manifests": [
            {"mediaType": child_type, "digest": sha(child), "size": len(child),
             "platform": {"architecture": "amd64", "os": "linux"}}]}
        body = json.dumps(doc).encode()
        r = requests.put(url(proxy, f"/v2/{name}/manifests/{tag}"), data=body, headers={"Content-Type": list_type},
                         timeout=10)
        assert r.status_code == 201, r.text
        children[list_type] = body
    tags = {OCI_MANIFEST: "oci", DOCKER_MANIFEST: "docker", OCI_INDEX: "oci-index", DOCKER_LIST: "list"}
    for mt, body in children.items():
        for ref in (tags[mt], sha(body)):
            r = requests.get(url(proxy, f"/v2/{name}/manifests/{ref}"), headers={"Accept": ", ".join(tags)}, timeout=10)
            assert r.status_code == 200 and r.content == body
            assert r.headers["Content-Type"] == mt and r.headers["Docker-Content-Digest"] == sha(body)
            r = requests.head(url(proxy, f"/v2/{name}/manifests/{ref}"), headers={"Accept": ", ".join(tags)},
                              timeout=10)
            assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(body)
            assert r.headers["Content-Type"] == mt
    r = requests.get(url(proxy, f"/v2/{name}/manifests/nope"), timeout=5)
    assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    r = requests.put(url(proxy, f"/v2/{name}/manifests/{ZERO}"), data=children[OCI_MANIFEST],
                     headers={"Content-Type": OCI_MANIFEST}, timeout=5)
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]


def test_manifest_blob_unknown(proxy):
    name = "it/incomplete"
    body = json.loads(push_image(proxy, name, OCI_MANIFEST, [b"present layer"]))
    missing = sha(os.urandom(16))
    body["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": missing, "size": 16})
    r = requests.put(url(proxy, f"/v2/{name}/manifests/v1"), data=json.dumps(body),
                     headers={"Content-Type": OCI_MANIFEST}, timeout=10)
    assert r.status_code == 400 and codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"] == missing
    assert requests.get(url(proxy, f"/v2/{name}/manifests/v1"), timeout=5).status_code == 404
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 10}]}
    r = requests.put(url(proxy, f"/v2/{name}/manifests/idx"), data=json.dumps(index),
                     headers={"Content-Type": OCI_INDEX}, timeout=10)
    assert r.status_code == 400 and codes(r) == ["MANIFEST_BLOB_UNKNOWN"]


def test_invalid_names(proxy):
    host, port = proxy.split(":")
    # Raw, so that no client library resolves the dot segments away first.
    for path in ("/v2/../../etc/tags/list", "/v2/%2E%2E/%2E%2E/etc/tags/list", "/v2/Upper/tags/list",
                 "/v2/UPPER/blobs/uploads/"):
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("POST" if path.endswith("uploads/") else "GET", path)
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 400, path
        assert [e["code"] for e in body["errors"]] == ["NAME_INVALID"], path
        assert resp.getheader("Docker-Distribution-API-Version") == "registry/2.0"


def test_tags_and_catalog_paging(proxy):
    name = "it/paging"
    body = push_image(proxy, name, OCI_MANIFEST, [b"paging layer"])
    wanted = ["a", "b", "c", "d", "e"]
    for tag in ("d", "b", "e", "a", "c"):
        r = requests.put(url(proxy, f"/v2/{name}/manifests/{tag}"), data=body, headers={"Content-Type": OCI_MANIFEST},
                         timeout=10)
        assert r.status_code == 201
    assert requests.get(url(proxy, f"/v2/{name}/tags/list"), timeout=5).json() == {"name": name, "tags": wanted}
    got, path = [], f"/v2/{name}/tags/list?n=2"
    while path:
        r = requests.get(url(proxy, path), timeout=5)
        assert r.status_code == 200
        got.extend(r.json()["tags"])
        link = r.headers.get("Link")
        path = link[1:link.index(">")] if link else None
        assert not link or link.endswith('rel="next"')
    assert got == wanted
    r = requests.get(url(proxy, f"/v2/{name}/tags/list?n=-1"), timeout=5)
    assert r.status_code == 400 and codes(r) == ["PAGINATION_NUMBER_INVALID"]
    r = requests.get(url(proxy, "/v2/it/never-pushed/tags/list"), timeout=5)
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]
    repos, path = [], "/v2/_catalog?n=1"
    while path:
        r = requests.get(url(proxy, path), timeout=5)
        assert r.status_code == 200 and len(r.json()["repositories"]) <= 1
        repos.extend(r.json()["repositories"])
        link = r.headers.get("Link")
        path = link[1:link.index(">")] if link else None
    assert name in repos and repos == sorted(set(repos))
    assert requests.get(url(proxy, "/v2/_catalog"), timeout=5).json()["repositories"] == repos[:100]


def test_prefetch(proxy):
    name = "it/prefetch"
    body = push_image(proxy, name, DOCKER_MANIFEST, [os.urandom(1000)])
    assert requests.put(url(proxy, f"/v2/{name}/manifests/v1"), data=body,
                        headers={"Content-Type": DOCKER_MANIFEST}, timeout=10).status_code == 201
    r = requests.post(url(proxy, "/proxy/v1/registry/prefetch"), json={"tag": f"{name}:v1"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["digest"] == sha(body) and len(r.json()["blobs"]) == 3 and r.json()["failed"] == []
    r = requests.post(url(proxy, "/proxy/v1/registry/prefetch"), json={"tag": f"{name}:missing"}, timeout=10)
    assert r.status_code == 404
