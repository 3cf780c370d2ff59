"""The proxy's registry API through the Flask test client, with in-memory fakes of the
origin ring and of build-index (the integration tier drives a real proxy against a real
cluster). FakeBuildIndex is a FAKE of buildindex.client.BuildIndexClient's interface."""

from __future__ import annotations

import hashlib
import json

import pytest

from common.digest import Digest
from common.errors import NotFound, Rejected
from common.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from common.sections import RingConfig
from proxy.app import create_app
from proxy.config import ProxyConfig, RegistryConfig, UploadsConfig

ZERO = "sha256:" + "0" * 64
ALL_TYPES = {"Accept": ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))}


class FakeResponse:
    def __init__(self, data: bytes, status: int = 200):
        self.data, self.status_code = data, status
        self.closed = False

    @property
    def content(self) -> bytes:
        return self.data

    def iter_content(self, size):
        for i in range(0, len(self.data), 3):  # small pieces, to exercise the slicing
            yield self.data[i:i + 3]

    def close(self):
        self.closed = True


class FakeOrigins:
    """The ClusterClient calls the proxy makes, over a dict. `ignore_range` imitates an
    origin that answers a ranged GET with the whole blob."""

    def __init__(self):
        self.blobs: dict[Digest, bytes] = {}
        self.uploads: list[tuple[str, Digest]] = []
        self.prefetched: list[Digest] = []
        self.ignore_range = False

    def stat(self, namespace, digest):
        if digest not in self.blobs:
            raise NotFound(str(digest))
        return len(self.blobs[digest])

    def download(self, namespace, digest):
        self.stat(namespace, digest)
        return FakeResponse(self.blobs[digest])

    def download_range(self, namespace, digest, start, end):
        self.stat(namespace, digest)
        if self.ignore_range:
            return FakeResponse(self.blobs[digest])
        return FakeResponse(self.blobs[digest][start:end], 206)

    def upload(self, namespace, digest, path):
        data = open(path, "rb").read()
        assert Digest.of_bytes(data) == digest
        self.uploads.append((namespace, digest))
        if digest in self.blobs:
            return False
        self.blobs[digest] = data
        return True

    def prefetch(self, namespace, digest):
        self.stat(namespace, digest)
        self.prefetched.append(digest)


class FakeBuildIndex:
    """A FAKE of BuildIndexClient: tags are `repo:tag` strings."""

    def __init__(self):
        self.tags: dict[str, Digest] = {}

    def put_tag(self, tag, digest, replicate=False):
        self.tags[tag] = digest

    def get_tag(self, tag):
        if tag not in self.tags:
            raise NotFound(tag)
        return self.tags[tag]

    def _paged(self, items, limit, offset, last):
        if last is not None:
            if "!" in last:
                raise Rejected(f"bad last {last!r}")
            items = [i for i in items if i > last]
        offset = offset or 0
        end = len(items) if limit is None else offset + limit
        return items[offset:end], (end if end < len(items) else None)

    def list_repo(self, repo, limit=None, offset=None, last=None):
        tags = sorted(t.split(":", 1)[1] for t in self.tags if t.split(":", 1)[0] == repo)
        return self._paged(tags, limit, offset, last)

    def list_prefix(self, prefix, limit=None, offset=None, last=None):
        repos = sorted({t.split(":", 1)[0] for t in self.tags if t.startswith(prefix)})
        return self._paged(repos, limit, offset, last)

    def ping(self):
        pass


@pytest.fixture
def env(tmp_path):
    cfg = ProxyConfig(origins=RingConfig(members=("x:1",)), build_index=("y:1",),
                      uploads=UploadsConfig(dir=str(tmp_path / "uploads")),
                      registry=RegistryConfig(catalog_default_entries=3, catalog_max_entries=10))
    origins, index = FakeOrigins(), FakeBuildIndex()
    app = create_app(cfg, origins=origins, build_index=index)
    return app.test_client(), origins, index, tmp_path / "uploads"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def codes(resp) -> list[str]:
    return [e["code"] for e in resp.get_json()["errors"]]


def push(client, name: str, data: bytes) -> str:
    d = sha(data)
    r = client.post(f"/v2/{name}/blobs/uploads/?digest={d}", data=data)
    assert r.status_code == 201, r.data
    return d


def image_manifest(client, name, media_type=OCI_MANIFEST, layers=(b"layer-1", b"layer-2")) -> bytes:
    cfg = push(client, name, b'{"architecture":"amd64"}')
    doc = {"schemaVersion": 2, "mediaType": media_type,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 24},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": push(client, name, layer),
                       "size": len(layer)} for layer in layers]}
    return json.dumps(doc).encode()


# Base and errors.
def test_base_answers_with_api_version(env):
    client, *_ = env
    r = client.get("/v2/")
    assert r.status_code == 200 and r.get_json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("name", ["Upper/case", "a//b", "-lead", "..", "a/../b"])
def test_invalid_names_are_name_invalid(env, name):
    client, *_ = env
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status_code == 400 and codes(r) == ["NAME_INVALID"]
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_unknown_route_is_an_envelope(env):
    client, *_ = env
    r = client.get("/v2/foo/nothing")
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]


# Uploads.
def test_chunked_upload_with_inclusive_ranges(env):
    client, origins, _, _ = env
    data = b"0123456789abcdef"
    r = client.post("/v2/a/b/blobs/uploads/")
    assert r.status_code == 202 and r.headers["Range"] == "0-0"
    uid = r.headers["Docker-Upload-UUID"]
    loc = r.headers["Location"]
    assert loc == f"/v2/a/b/blobs/uploads/{uid}"
    r = client.patch(loc, data=data[:10], headers={"Content-Range": "0-9"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9"
    r = client.patch(loc, data=data[10:], headers={"Content-Range": "10-15"})
    assert r.status_code == 202 and r.headers["Range"] == "0-15"
    r = client.get(loc)
    assert r.status_code == 204 and r.headers["Range"] == "0-15" and r.headers["Docker-Upload-UUID"] == uid
    r = client.put(f"{loc}?digest={sha(data)}")
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/a/b/blobs/{sha(data)}"
    assert r.headers["Docker-Content-Digest"] == sha(data)
    assert origins.blobs[Digest.parse(sha(data))] == data
    assert codes(client.get(loc)) == ["BLOB_UPLOAD_UNKNOWN"]


def test_out_of_order_chunk_is_416_and_upload_resumes(env):
    client, origins, _, _ = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    client.patch(loc, data=b"abcd", headers={"Content-Range": "0-3"})
    r = client.patch(loc, data=b"ijkl", headers={"Content-Range": "8-11"})
    assert r.status_code == 416 and codes(r) == ["RANGE_INVALID"]
    assert r.headers["Range"] == "0-3"
    r = client.patch(loc, data=b"efgh", headers={"Content-Range": "4-7"})
    assert r.status_code == 202 and r.headers["Range"] == "0-7"
    assert client.put(f"{loc}?digest={sha(b'abcdefgh')}").status_code == 201


def test_content_length_must_match_range(env):
    client, *_ = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    r = client.patch(loc, data=b"abc", headers={"Content-Range": "0-9"})
    assert r.status_code == 400 and codes(r) == ["SIZE_INVALID"]
    assert client.get(loc).headers["Range"] == "0-0"


def test_streamed_patch_then_put_with_final_chunk(env):
    client, origins, _, _ = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    r = client.patch(loc, data=b"hello ")
    assert r.status_code == 202 and r.headers["Range"] == "0-5"
    r = client.put(f"{loc}?digest={sha(b'hello world')}", data=b"world")
    assert r.status_code == 201
    assert origins.blobs[Digest.parse(sha(b"hello world"))] == b"hello world"


def test_monolithic_post(env):
    client, origins, _, _ = env
    assert push(client, "repo", b"monolithic") == sha(b"monolithic")
    assert origins.blobs[Digest.parse(sha(b"monolithic"))] == b"monolithic"


def test_digest_mismatch_stores_nothing(env):
    client, origins, _, uploads = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    r = client.put(f"{loc}?digest={ZERO}", data=b"not zero")
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    assert not origins.blobs and not origins.uploads
    assert list(uploads.iterdir()) == []
    r = client.post(f"/v2/repo/blobs/uploads/?digest={ZERO}", data=b"not zero")
    assert r.status_code == 400 and codes(r) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/repo/blobs/{sha(b'not zero')}").status_code == 404


def test_put_without_or_with_bad_digest(env):
    client, *_ = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    assert codes(client.put(loc)) == ["DIGEST_INVALID"]
    assert codes(client.put(f"{loc}?digest=md5:abc")) == ["DIGEST_INVALID"]
    assert client.get(loc).status_code == 204  # the upload is still there


def test_cancel_upload(env):
    client, *_ = env
    loc = client.post("/v2/repo/blobs/uploads/").headers["Location"]
    r = client.delete(loc)
    assert r.status_code == 204
    for r in (client.get(loc), client.patch(loc, data=b"x"), client.put(f"{loc}?digest={ZERO}"), client.delete(loc)):
        assert r.status_code == 404 and codes(r) == ["BLOB_UPLOAD_UNKNOWN"]


@pytest.mark.parametrize("uid", ["..%2F..%2Fetc%2Fpasswd", "0" * 32, "ABCDEFAB-0000-0000-0000-000000000000",
                                 "%2E%2E", "x" * 500])
def test_hostile_upload_ids_are_unknown(env, uid):
    client, *_ = env
    r = client.patch(f"/v2/repo/blobs/uploads/{uid}", data=b"x")
    assert r.status_code == 404 and codes(r) in (["BLOB_UPLOAD_UNKNOWN"], ["NAME_UNKNOWN"])


def test_upload_belongs_to_its_repository(env):
    client, *_ = env
    uid = client.post("/v2/one/blobs/uploads/").headers["Docker-Upload-UUID"]
    assert codes(client.get(f"/v2/two/blobs/uploads/{uid}")) == ["BLOB_UPLOAD_UNKNOWN"]


def test_mount(env):
    client, origins, _, _ = env
    d = push(client, "src", b"shared layer")
    r = client.post(f"/v2/dst/blobs/uploads/?mount={d}&from=src")
    assert r.status_code == 201 and r.headers["Location"] == f"/v2/dst/blobs/{d}"
    assert r.headers["Docker-Content-Digest"] == d
    r = client.post(f"/v2/dst/blobs/uploads/?mount={ZERO}&from=src")
    assert r.status_code == 202 and "Docker-Upload-UUID" in r.headers


# Blobs.
def test_blob_get_head_and_range(env):
    client, origins, _, _ = env
    data = bytes(range(100))
    d = push(client, "repo", data)
    r = client.head(f"/v2/repo/blobs/{d}")
    assert r.status_code == 200 and r.headers["Content-Length"] == "100" and r.data == b""
    assert r.headers["Docker-Content-Digest"] == d and r.headers["Accept-Ranges"] == "bytes"
    r = client.get(f"/v2/repo/blobs/{d}")
    assert r.status_code == 200 and r.data == data
    r = client.get(f"/v2/repo/blobs/{d}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.data == data[10:20]
    assert r.headers["Content-Range"] == "bytes 10-19/100" and r.headers["Content-Length"] == "10"
    origins.ignore_range = True
    r = client.get(f"/v2/repo/blobs/{d}", headers={"Range": "bytes=95-"})
    assert r.status_code == 206 and r.data == data[95:]
    r = client.get(f"/v2/repo/blobs/{d}", headers={"Range": "bytes=200-300"})
    assert r.status_code == 416


def test_unknown_blob_and_blob_delete(env):
    client, *_ = env
    r = client.get(f"/v2/repo/blobs/{ZERO}")
    assert r.status_code == 404 and codes(r) == ["BLOB_UNKNOWN"]
    r = client.head(f"/v2/repo/blobs/{ZERO}")
    assert r.status_code == 404 and r.data == b""
    r = client.delete(f"/v2/repo/blobs/{ZERO}")
    assert r.status_code == 405 and codes(r) == ["UNSUPPORTED"]
    assert codes(client.get("/v2/repo/blobs/sha256:XYZ")) == ["DIGEST_INVALID"]


# Manifests.
@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_image_manifest_by_tag_and_digest(env, media_type):
    client, origins, index, _ = env
    body = image_manifest(client, "lib/app", media_type)
    r = client.put("/v2/lib/app/manifests/v1", data=body, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.data
    d = sha(body)
    assert r.headers["Docker-Content-Digest"] == d and r.headers["Location"] == f"/v2/lib/app/manifests/{d}"
    assert index.tags["lib/app:v1"] == Digest.parse(d)
    for ref in ("v1", d):
        r = client.get(f"/v2/lib/app/manifests/{ref}", headers={"Accept": media_type})
        assert r.status_code == 200 and r.data == body
        assert r.headers["Content-Type"] == media_type and r.headers["Docker-Content-Digest"] == d
        r = client.head(f"/v2/lib/app/manifests/{ref}", headers=ALL_TYPES)
        assert r.status_code == 200 and r.headers["Content-Length"] == str(len(body)) and r.data == b""


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_LIST])
def test_index_requires_its_manifests(env, media_type):
    client, *_ = env
    child = image_manifest(client, "multi")
    doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(child), "size": len(child),
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    body = json.dumps(doc).encode()
    r = client.put("/v2/multi/manifests/latest", data=body, headers={"Content-Type": media_type})
    assert r.status_code == 400 and codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.get_json()["errors"][0]["detail"] == sha(child)
    assert client.put(f"/v2/multi/manifests/{sha(child)}", data=child,
                      headers={"Content-Type": OCI_MANIFEST}).status_code == 201
    r = client.put("/v2/multi/manifests/latest", data=body, headers={"Content-Type": media_type})
    assert r.status_code == 201
    r = client.get("/v2/multi/manifests/latest", headers=ALL_TYPES)
    assert r.data == body and r.headers["Content-Type"] == media_type


def test_manifest_with_missing_blobs_lists_each(env):
    client, *_ = env
    layer = b"only this one"
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "x", "digest": sha(b"cfg"), "size": 3},
           "layers": [{"mediaType": "x", "digest": push(client, "r", layer), "size": len(layer)},
                      {"mediaType": "x", "digest": sha(b"gone"), "size": 4}]}
    r = client.put("/v2/r/manifests/t", data=json.dumps(doc), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400
    assert [(e["code"], e["detail"]) for e in r.get_json()["errors"]] == [
        ("MANIFEST_BLOB_UNKNOWN", sha(b"cfg")), ("MANIFEST_BLOB_UNKNOWN", sha(b"gone"))]
    assert codes(client.get("/v2/r/manifests/t")) == ["MANIFEST_UNKNOWN"]


def test_manifest_put_checks(env):
    client, *_ = env
    body = image_manifest(client, "r")
    headers = {"Content-Type": OCI_MANIFEST}
    assert codes(client.put(f"/v2/r/manifests/{ZERO}", data=body, headers=headers)) == ["DIGEST_INVALID"]
    assert codes(client.put("/v2/r/manifests/bad!tag", data=body, headers=headers)) == ["TAG_INVALID"]
    assert codes(client.put("/v2/r/manifests/t", data=b"{nope", headers=headers)) == ["MANIFEST_INVALID"]
    r = client.put("/v2/r/manifests/t", data=body, headers={"Content-Type": DOCKER_MANIFEST})
    assert codes(r) == ["MANIFEST_INVALID"]  # body says OCI
    assert client.put(f"/v2/r/manifests/{sha(body)}", data=body, headers=headers).status_code == 201
    assert codes(client.delete(f"/v2/r/manifests/{sha(body)}")) == ["UNSUPPORTED"]


def test_unknown_manifests(env):
    client, *_ = env
    for ref in ("nope", ZERO, "bad!tag"):
        r = client.get(f"/v2/r/manifests/{ref}")
        assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    layer = push(client, "r", b"a layer, not a manifest")
    assert codes(client.get(f"/v2/r/manifests/{layer}")) == ["MANIFEST_UNKNOWN"]


def test_oci_types_only_for_clients_that_accept_them(env):
    client, *_ = env
    body = image_manifest(client, "r")
    client.put("/v2/r/manifests/t", data=body, headers={"Content-Type": OCI_MANIFEST})
    for accept in ({"Accept": DOCKER_MANIFEST}, {"Accept": "*/*"}, {}):
        r = client.get("/v2/r/manifests/t", headers=accept)
        assert r.status_code == 404 and codes(r) == ["MANIFEST_UNKNOWN"]
    assert client.get("/v2/r/manifests/t", headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"}).status_code == 200
    docker = image_manifest(client, "r", DOCKER_MANIFEST, layers=(b"other",))
    client.put("/v2/r/manifests/d", data=docker, headers={"Content-Type": DOCKER_MANIFEST})
    assert client.get("/v2/r/manifests/d").data == docker  # Docker manifests: to anyone


def test_docker_list_by_tag_for_old_clients_is_the_amd64_manifest(env):
    client, *_ = env
    arm = image_manifest(client, "r", DOCKER_MANIFEST, layers=(b"arm",))
    amd = image_manifest(client, "r", DOCKER_MANIFEST, layers=(b"amd",))
    for m in (arm, amd):
        client.put(f"/v2/r/manifests/{sha(m)}", data=m, headers={"Content-Type": DOCKER_MANIFEST})
    doc = {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha(m), "size": len(m),
         "platform": {"architecture": arch, "os": "linux"}}
        for m, arch in ((arm, "arm64"), (amd, "amd64"))]}
    body = json.dumps(doc).encode()
    assert client.put("/v2/r/manifests/multi", data=body, headers={"Content-Type": DOCKER_LIST}).status_code == 201
    r = client.get("/v2/r/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
    assert r.data == amd and r.headers["Docker-Content-Digest"] == sha(amd)
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert codes(client.get("/v2/r/manifests/multi")) == ["MANIFEST_INVALID"]
    assert client.get(f"/v2/r/manifests/{sha(body)}").data == body  # by digest: as pushed
    assert client.get("/v2/r/manifests/multi", headers=ALL_TYPES).data == body


def test_if_none_match(env):
    client, *_ = env
    body = image_manifest(client, "r", DOCKER_MANIFEST)
    client.put("/v2/r/manifests/t", data=body, headers={"Content-Type": DOCKER_MANIFEST})
    r = client.get("/v2/r/manifests/t", headers={"If-None-Match": f'"{sha(body)}"'})
    assert r.status_code == 304 and r.data == b""


# Tags and catalog.
def test_tags_list_paging(env):
    client, _, index, _ = env
    for t in ("b", "a", "d", "c", "e"):
        index.tags[f"r/x:{t}"] = Digest.parse(ZERO)
    index.tags["r/other:z"] = Digest.parse(ZERO)
    r = client.get("/v2/r/x/tags/list")
    assert r.get_json() == {"name": "r/x", "tags": ["a", "b", "c", "d", "e"]} and "Link" not in r.headers
    r = client.get("/v2/r/x/tags/list?n=2")
    assert r.get_json()["tags"] == ["a", "b"]
    assert r.headers["Link"] == '</v2/r/x/tags/list?n=2&last=b>; rel="next"'
    r = client.get("/v2/r/x/tags/list?n=2&last=d")
    assert r.get_json()["tags"] == ["e"] and "Link" not in r.headers
    r = client.get("/v2/r/x/tags/list?n=2&last=c!")  # build-index refuses this `last`
    assert r.get_json()["tags"] == ["d", "e"] and "Link" not in r.headers
    assert client.get("/v2/r/x/tags/list?last=c").get_json()["tags"] == ["d", "e"]
    assert client.get("/v2/r/x/tags/list?n=5&last=e").get_json()["tags"] == []
    assert client.get("/v2/r/x/tags/list?n=0").get_json()["tags"] == []
    for bad in ("-1", "x"):
        r = client.get(f"/v2/r/x/tags/list?n={bad}")
        assert r.status_code == 400 and codes(r) == ["PAGINATION_NUMBER_INVALID"]
    r = client.get("/v2/r/none/tags/list")
    assert r.status_code == 404 and codes(r) == ["NAME_UNKNOWN"]


def test_catalog_paging(env):
    client, _, index, _ = env
    for repo in ("e", "a/b", "c", "a", "d"):
        index.tags[f"{repo}:latest"] = Digest.parse(ZERO)
    r = client.get("/v2/_catalog")  # default n = 3 here
    assert r.get_json() == {"repositories": ["a", "a/b", "c"]}
    assert r.headers["Link"] == '</v2/_catalog?n=3&last=c>; rel="next"'
    r = client.get("/v2/_catalog?n=3&last=c")
    assert r.get_json() == {"repositories": ["d", "e"]} and "Link" not in r.headers
    r = client.get("/v2/_catalog?n=11")
    assert codes(r) == ["PAGINATION_NUMBER_INVALID"]


# Prefetch.
def test_prefetch_warms_manifest_and_blobs(env):
    client, origins, _, _ = env
    body = image_manifest(client, "r")
    client.put("/v2/r/manifests/t", data=body, headers={"Content-Type": OCI_MANIFEST})
    r = client.post("/proxy/v1/registry/prefetch", json={"tag": "r:t"})
    assert r.status_code == 200, r.data
    assert r.get_json()["digest"] == sha(body)
    assert len(set(origins.prefetched)) == 4  # manifest, config, two layers
    r = client.post("/proxy/v1/registry/prefetch", json={"tag": "r:none"})
    assert r.status_code == 404 and "error" in r.get_json()
    assert client.post("/proxy/v1/registry/prefetch", json={}).status_code == 400
