"""One contract, run against every writable storage backend over its real transport: a
local directory, the testfs HTTP file server, and an S3 API (moto's standalone server on
loopback). The read-only registry backend runs against Debian's docker-registry."""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest
import requests

from common.backends import BackendError, Manager, NotFound, ReadOnly, create, keys
from common.backends.bandwidth import TokenBucket
from common.digest import Digest
from common.errors import ConfigError
from tests import servers


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with servers.moto_s3(tmp_path_factory.mktemp("moto")) as (endpoint, _):
        yield endpoint


@pytest.fixture(scope="module")
def testfs_addr(tmp_path_factory):
    with servers.testfs(tmp_path_factory.mktemp("testfs") / "root") as (addr, _):
        yield addr


S3_OPTIONS = dict(region="us-east-1", access_key="test", secret_key="test", path_style=True,
                  multipart_threshold=5 << 20, multipart_chunk=5 << 20)


@pytest.fixture(params=["fs", "http", "s3"])
def backend(request, tmp_path):
    if request.param == "fs":
        yield create("fs", {"root": str(tmp_path / "fs")})
    elif request.param == "http":
        # Each test gets its own key space on the shared server.
        yield create("http", {"url": f"http://{request.getfixturevalue('testfs_addr')}", "root": tmp_path.name})
    else:
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"b-{os.urandom(4).hex()}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=bucket)
        yield create("s3", {"bucket": bucket, "endpoint": endpoint, "root": "kraken", **S3_OPTIONS})


def blob_key(data: bytes) -> str:
    return keys.blob(Digest.of_bytes(data))


def test_missing_key_is_not_found(backend):
    key = blob_key(b"never stored")
    with pytest.raises(NotFound):
        backend.stat("ns", key)
    with pytest.raises(NotFound):
        backend.download("ns", key, io.BytesIO())


def test_upload_then_stat_and_download(backend):
    data = os.urandom(300_000)
    key = blob_key(data)
    backend.upload("ns", key, io.BytesIO(data), len(data))
    assert backend.stat("ns", key) == len(data)
    out = io.BytesIO()
    assert backend.download("other-namespace", key, out) == len(data)
    assert out.getvalue() == data


def test_large_blob_round_trip_in_parts(backend, tmp_path):
    # 12 MiB crosses the s3 multipart threshold (5 MiB here), so it goes up in three parts.
    path = tmp_path / "big"
    data = os.urandom(12 << 20)
    path.write_bytes(data)
    key = blob_key(data)
    with open(path, "rb") as f:
        backend.upload("ns", key, f)
    out = io.BytesIO()
    backend.download("ns", key, out)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()


def test_tags_overwrite_and_list_by_prefix(backend):
    backend.put_bytes("library/app", keys.tag("library/app", "1"), b"sha256:" + b"a" * 64)
    backend.put_bytes("library/app", keys.tag("library/app", "2"), b"sha256:" + b"b" * 64)
    backend.put_bytes("library/app", keys.tag("library/app", "1"), b"sha256:" + b"c" * 64)
    backend.put_bytes("library/apple", keys.tag("library/apple", "1"), b"sha256:" + b"d" * 64)
    assert backend.get_bytes("library/app", keys.tag("library/app", "1")) == b"sha256:" + b"c" * 64
    assert list(backend.list(keys.tag("library/app", ""))) == ["tags/library/app/1", "tags/library/app/2"]
    assert list(backend.list("tags/")) == ["tags/library/app/1", "tags/library/app/2", "tags/library/apple/1"]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "blobs//x", "a/./b", ""])
def test_unsafe_keys_are_refused(backend, key):
    with pytest.raises(ValueError):
        backend.stat("ns", key)


@pytest.mark.parametrize("kind", ["http", "s3"])
def test_unreachable_backend_is_a_backend_error(kind):
    port = servers.free_port()
    options = ({"url": f"http://127.0.0.1:{port}", "timeout": 2} if kind == "http"
               else {"bucket": "b", "endpoint": f"http://127.0.0.1:{port}", "timeout": 2, **S3_OPTIONS})
    backend = create(kind, options)
    with pytest.raises(BackendError):
        backend.stat("ns", blob_key(b"x"))
    with pytest.raises(BackendError):
        backend.put_bytes("ns", blob_key(b"x"), b"x")


def test_manager_picks_first_matching_rule(tmp_path):
    manager = Manager.from_config([
        {"namespace": "library/.*", "backend": "fs", "fs": {"root": str(tmp_path / "a")}},
        {"namespace": ".*", "backend": "fs", "options": {"root": str(tmp_path / "b")}},
    ])
    assert manager.get("library/busybox").root == tmp_path / "a"
    assert manager.get("team/app").root == tmp_path / "b"
    assert Manager.from_config([]).get("x") is None


@pytest.mark.parametrize("entry, message", [
    ({"namespace": ".*", "backend": "nope"}, "unknown storage backend"),
    ({"namespace": "(", "backend": "fs", "fs": {"root": "/tmp/x"}}, "bad namespace regex"),
    ({"backend": "fs"}, "needs 'namespace'"),
    ({"namespace": ".*", "backend": "fs", "fs": {"root": "/tmp/x", "bogus": 1}}, "backend 'fs'"),
])
def test_manager_config_errors_are_clear(entry, message):
    with pytest.raises(ConfigError, match=message):
        Manager.from_config([entry])


def test_token_bucket_paces_to_the_rate():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    bucket = TokenBucket(rate=1000, burst=1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        bucket.take(1000)
    # The first 1000 bytes ride the initial burst; the next 4000 cost 4 s at 1000 B/s.
    assert sum(slept) == pytest.approx(4.0)


def test_bandwidth_cap_wraps_any_backend(tmp_path):
    backend = create("fs", {"root": str(tmp_path), "bandwidth": {"egress_bytes_per_sec": 1 << 30,
                                                                "ingress_bytes_per_sec": 1 << 30}})
    backend.put_bytes("ns", blob_key(b"abc"), b"abc")
    assert backend.get_bytes("ns", blob_key(b"abc")) == b"abc"


# The registry backend, read-only, against the reference registry.
@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with servers.docker_registry(tmp_path_factory.mktemp("upstream")) as (addr, _):
        yield addr


def push_blob(addr: str, repo: str, data: bytes) -> Digest:
    return servers.push_blob(requests, f"http://{addr}", repo, data)


def test_registry_backend_reads_blobs_manifests_and_tags(upstream):
    repo = "upstream/app"
    layer, config = os.urandom(50_000), b'{"architecture":"amd64","os":"linux"}'
    layer_d, config_d = push_blob(upstream, repo, layer), push_blob(upstream, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(config_d),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(layer_d), "size": len(layer)}],
    }).encode()
    resp = requests.put(f"http://{upstream}/v2/{repo}/manifests/v1", data=manifest,
                        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    assert resp.status_code == 201, resp.text
    manifest_d = Digest.of_bytes(manifest)

    backend = create("registry", {"address": upstream, "scheme": "http"})
    assert backend.stat(repo, keys.blob(layer_d)) == len(layer)
    assert backend.get_bytes(repo, keys.blob(layer_d)) == layer
    # A manifest is a blob to kraken; upstream serves it from its manifests endpoint.
    assert backend.get_bytes(repo, keys.blob(manifest_d)) == manifest
    assert backend.get_bytes(repo, keys.tag(repo, "v1")) == str(manifest_d).encode()
    assert list(backend.list(keys.tag(repo, ""))) == [keys.tag(repo, "v1")]

    with pytest.raises(NotFound):
        backend.stat(repo, keys.blob(Digest.of_bytes(b"missing")))
    with pytest.raises(NotFound):
        backend.get_bytes(repo, keys.tag(repo, "nope"))
    with pytest.raises(ReadOnly):
        backend.put_bytes(repo, keys.blob(layer_d), layer)
