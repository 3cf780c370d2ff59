"""The origin's chunked upload: digests verified at commit, nothing partial ever stored."""

from __future__ import annotations

import os

import requests

from common.digest import Digest
from common.ring import HashRing


def start(origin: str, digest, ns: str = "test") -> str:
    resp = requests.post(f"http://{origin}/namespace/{ns}/blobs/{digest}/uploads", timeout=5)
    assert resp.status_code == 202, resp.text
    return f"http://{origin}{resp.headers['Location']}"


def test_wrong_digest_at_commit_is_400_and_nothing_is_stored(cluster):
    data = os.urandom(1 << 20)
    claimed = Digest.of_bytes(b"something else entirely")
    origin = cluster.origins[0]
    url = start(origin, claimed)
    assert requests.patch(url, data=data, headers={"Content-Range": f"0-{len(data)}"}, timeout=10).status_code == 202
    resp = requests.put(url, timeout=10)
    assert resp.status_code == 400
    assert "mismatch" in resp.json()["error"]
    for o in cluster.origins:
        assert requests.head(f"http://{o}/namespace/test/blobs/{claimed}", timeout=5).status_code == 404
    # The failed upload is gone, and the digest can still be uploaded properly.
    assert requests.put(url, timeout=5).status_code == 404
    start(origin, claimed)


def test_chunked_upload_in_order_then_conflict_on_second_upload(cluster):
    data = os.urandom(3 << 20)
    digest = Digest.of_bytes(data)
    origin = HashRing(cluster.origins, cluster.replicas).locations(digest)[0]
    url = start(origin, digest)
    chunk = 1 << 20
    for off in range(0, len(data), chunk):
        resp = requests.patch(url, data=data[off:off + chunk],
                              headers={"Content-Range": f"{off}-{off + chunk}"}, timeout=10)
        assert resp.status_code == 202 and resp.headers["Range"] == f"0-{off + chunk}"
    assert requests.put(url, timeout=10).status_code == 201
    assert requests.get(f"http://{origin}/namespace/test/blobs/{digest}", timeout=10).content == data
    assert requests.post(f"http://{origin}/namespace/test/blobs/{digest}/uploads", timeout=5).status_code == 409


def test_out_of_order_and_short_chunks_are_refused_without_damage(cluster):
    data = os.urandom(2 << 20)
    digest = Digest.of_bytes(data)
    url = start(cluster.origins[1], digest)
    half = 1 << 20
    resp = requests.patch(url, data=data[half:], headers={"Content-Range": f"{half}-{2 * half}"}, timeout=10)
    assert resp.status_code == 416 and "out-of-order" in resp.json()["error"]
    resp = requests.patch(url, data=data[:half], headers={"Content-Range": f"0-{half + 10}"}, timeout=10)
    assert resp.status_code == 400
    resp = requests.patch(url, data=data[:half], headers={"Content-Range": "garbage"}, timeout=10)
    assert resp.status_code == 400
    # After the refusals the upload is still at 0 and completes normally.
    assert requests.patch(url, data=data[:half], headers={"Content-Range": f"0-{half}"}, timeout=10).status_code == 202
    resp = requests.patch(url, data=data[half:], headers={"Content-Range": f"{half}-{2 * half}"}, timeout=10)
    assert resp.status_code == 202
    assert requests.put(url, timeout=10).status_code == 201


def test_hostile_namespace_and_upload_id_are_harmless(cluster):
    digest = Digest.of_bytes(b"hostile")
    origin = cluster.origins[0]
    resp = requests.patch(f"http://{origin}/namespace/test/blobs/{digest}/uploads/..%2F..%2Fetc%2Fpasswd",
                          data=b"x", headers={"Content-Range": "0-1"}, timeout=5)
    assert resp.status_code == 404
    url = start(origin, digest, ns="..%2F..%2Fetc")
    assert requests.patch(url, data=b"hostile", headers={"Content-Range": "0-7"}, timeout=5).status_code == 202
    assert requests.put(url, timeout=5).status_code == 201
