"""Real docker against kraken and against the reference registry (CNCF distribution): the same
commands give the same visible results. Push goes to the proxy, pulls go through the agents'
registry ports; every layer an agent serves travels over BitTorrent."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from common.devcluster import Cluster
from tests.integration import docker_env
from tests.integration.docker_env import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    ReferenceRegistry,
    Target,
    kraken_target,
    pull_digest,
    push_digest,
    token,
)
from tests.integration.helpers import metric, wait_for
from tests.integration.images import build_image

# Fixtures (module-scoped dockerd, reference registry, skopeo; the parametrized target).
dockerd = docker_env.dockerd
reference_registry = docker_env.reference_registry
skopeo = docker_env.skopeo
target = docker_env.target


def test_docker_push_rmi_pull_and_run(target: Target, dockerd, tmp_path):
    repo = f"test/busybox-{token()}"
    img = build_image(dockerd, tmp_path, f"kraken-test/img-{token()}:1")
    pushed = f"{target.push}/{repo}:1"
    dockerd.run("tag", img.ref, pushed)
    digest = push_digest(dockerd.run("push", pushed).stdout)
    # Nothing of the image stays local, base included: the pull must fetch every layer.
    dockerd.wipe()
    pulled = f"{target.pulls[0]}/{repo}:1"
    out = dockerd.run("pull", pulled)
    assert pull_digest(out.stdout) == digest
    assert out.stdout.count("Pull complete") == len(img.layer_sizes) + 2, out.stdout
    run = dockerd.run("run", "--rm", "--network", "none", pulled)
    assert run.stdout == img.message + "\n"
    dockerd.wipe()


def _blob_digests(skopeo_dir: Path) -> list[str]:
    manifest = json.loads((skopeo_dir / "manifest.json").read_text())
    return [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]


def test_one_image_reaches_four_agents_at_once_over_p2p(cluster, dockerd, skopeo, tmp_path):
    t = kraken_target(cluster)
    repo = f"test/fanout-{token()}"
    img = build_image(dockerd, tmp_path, f"kraken-test/img-{token()}:1", layer_sizes=(24 << 20, 1 << 20))
    pushed = f"{t.push}/{repo}:1"
    dockerd.run("tag", img.ref, pushed)
    digest = push_digest(dockerd.run("push", pushed).stdout)
    dockerd.wipe()

    manifest = requests.get(f"http://{t.push}/v2/{repo}/manifests/1", headers={"Accept": DOCKER_MANIFEST},
                            timeout=10).json()
    sizes = {b["digest"]: b["size"] for b in [manifest["config"], *manifest["layers"]]}
    agents = t.agent_servers()[:4]
    origins = list(cluster.origins)

    def state(a: str, d: str) -> str:
        return requests.get(f"http://{a}/blobs/{d}/status", timeout=5).json()["state"]

    # The busybox base layer is the same in every test image and may be cached already;
    # the random layers are new to every agent.
    absent = {a: [d for d in sizes if state(a, d) == "absent"] for a in agents}
    for a in agents:
        assert {b["digest"] for b in manifest["layers"][1:]} <= set(absent[a]), (a, absent[a])
    recv0 = [metric(a, "kraken_torrent_recv_payload_bytes") for a in agents]
    sent0 = {a: metric(a, "kraken_torrent_sent_payload_bytes") for a in agents + origins}

    def copy(i: int) -> Path:
        dest = tmp_path / f"copy-{i}"
        skopeo.run("copy", "--src-tls-verify=false", f"docker://{t.pulls[i]}/{repo}:1", f"dir:{dest}")
        return dest

    with ThreadPoolExecutor(4) as pool:
        dests = list(pool.map(copy, range(4)))
    for dest in dests:
        assert _blob_digests(dest) == list(sizes)
        for d, size in sizes.items():
            assert (dest / d.split(":")[1]).stat().st_size == size

    # Every blob is in every agent's cache: it went through the agent, not around it.
    for a in agents:
        for d in sizes:
            wait_for(lambda a=a, d=d: state(a, d) == "cached", 15, f"{d} cached on agent {a}")
    # And what each agent lacked arrived as BitTorrent payload: it received at least those
    # bytes from peers (counters refresh every half second).
    for a, before in zip(agents, recv0):
        need = sum(sizes[d] for d in absent[a])
        try:
            wait_for(lambda a=a, before=before, need=need:
                     metric(a, "kraken_torrent_recv_payload_bytes") - before >= need, 10,
                     f"agent {a} to count {need} bytes received over BitTorrent")
        except AssertionError as exc:
            got = metric(a, "kraken_torrent_recv_payload_bytes") - before
            raise AssertionError(f"{exc}; it counted {got:.0f}") from None
    total = sum(sizes[d] for d in absent[agents[0]])
    sent = {a: metric(a, "kraken_torrent_sent_payload_bytes") - sent0[a] for a in agents + origins}
    origin_sent = sum(sent[o] for o in origins)
    print(f"4 agents x {total} bytes: origins sent {origin_sent / total:.2f} copies, "
          f"agents sent each other {sum(sent[a] for a in agents) / total:.2f}")
    assert origin_sent >= total * 0.9  # the origins were the only first source
    # Docker pulls the same image through the last of those agents and runs it.
    pulled = f"{t.pulls[3]}/{repo}:1"
    assert pull_digest(dockerd.run("pull", pulled).stdout) == digest
    assert dockerd.run("run", "--rm", "--network", "none", pulled).stdout == img.message + "\n"
    dockerd.wipe()


# Tags and catalog, on a registry nobody else has written to.

def _follow(base: str, path: str) -> tuple[list, list[str]]:
    """Every page of a paged list, following Link headers; (items, pages' URLs)."""
    url, items, pages = f"http://{base}{path}", [], []
    while url:
        resp = requests.get(url, timeout=10)
        assert resp.status_code == 200, (url, resp.status_code, resp.text)
        body = resp.json()
        items.extend(body.get("repositories", body.get("tags")) or [])
        pages.append(url)
        link = resp.headers.get("Link")
        url = None
        if link:
            assert 'rel="next"' in link, link
            url = urljoin(f"http://{base}/", link.split(";")[0].strip().strip("<>"))
        assert len(pages) < 20, pages
    return items, pages


@pytest.fixture(params=["reference", "kraken"])
def fresh_target(request, tmp_path_factory):
    root = Path(tempfile.mkdtemp(prefix="fresh-", dir=tmp_path_factory.getbasetemp()))
    if request.param == "reference":
        reg = ReferenceRegistry(root).start()
        yield Target("reference", reg.addr, [reg.addr])
        reg.stop()
    else:
        c = Cluster(root, agents=1, origins=1, replicas=1)
        c.start()
        try:
            yield kraken_target(c)
        finally:
            c.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_tags_list_and_catalog_with_paging(fresh_target: Target, dockerd, tmp_path):
    t = fresh_target
    img = build_image(dockerd, tmp_path, f"kraken-test/img-{token()}:1", layer_sizes=(4 << 10,))
    pushes = [("tags/alpha", "1"), ("tags/alpha", "2"), ("tags/alpha", "latest"), ("tags/beta", "v1")]
    for repo, tag in pushes:
        dockerd.run("tag", img.ref, f"{t.push}/{repo}:{tag}")
        dockerd.run("push", f"{t.push}/{repo}:{tag}")
    dockerd.wipe()

    assert requests.get(f"http://{t.push}/v2/_catalog", timeout=10).json() == {
        "repositories": ["tags/alpha", "tags/beta"]}
    assert _follow(t.push, "/v2/_catalog?n=1")[0] == ["tags/alpha", "tags/beta"]
    assert len(_follow(t.push, "/v2/_catalog?n=1")[1]) >= 2
    assert _follow(t.push, "/v2/_catalog?n=1&last=tags/alpha")[0] == ["tags/beta"]
    assert _follow(t.push, "/v2/_catalog?n=5")[0] == ["tags/alpha", "tags/beta"]

    # Distribution 2.8 lists tags in directory order and ignores n/last on tags/list (v3
    # sorts and pages them, as the OCI spec asks); compare the sets, and the result of
    # following Link headers from a page size of 2.
    for addr in {t.push, t.pulls[0]}:
        resp = requests.get(f"http://{addr}/v2/tags/alpha/tags/list", timeout=10)
        assert resp.status_code == 200, (addr, resp.text)
        body = resp.json()
        assert body["name"] == "tags/alpha" and sorted(body["tags"]) == ["1", "2", "latest"], (addr, body)
        assert requests.get(f"http://{addr}/v2/tags/beta/tags/list", timeout=10).json() == {
            "name": "tags/beta", "tags": ["v1"]}, addr
    items, pages = _follow(t.push, "/v2/tags/alpha/tags/list?n=2")
    assert sorted(items) == ["1", "2", "latest"] and len(items) == 3, (items, pages)
    if t.kind == "kraken":
        first = requests.get(f"http://{t.push}/v2/tags/alpha/tags/list?n=2", timeout=10).json()
        assert first == {"name": "tags/alpha", "tags": ["1", "2"]}
        assert len(pages) == 2, pages
        assert _follow(t.push, "/v2/tags/alpha/tags/list?n=10&last=1")[0] == ["2", "latest"]
    # A repository nobody pushed.
    resp = requests.get(f"http://{t.push}/v2/tags/nobody/tags/list", timeout=10)
    assert resp.status_code == 404
    assert resp.json()["errors"][0]["code"] == "NAME_UNKNOWN"


# Bad input over plain HTTP: the same status and error code as the reference, and nothing
# partial becomes visible afterwards.

def _upload_blob(base: str, repo: str, data: bytes) -> str:
    resp = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10)
    assert resp.status_code == 202, resp.text
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = requests.put(urljoin(base + "/", resp.headers["Location"]), params={"digest": digest}, data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert resp.status_code == 201, resp.text
    return digest


def _codes(resp) -> list[str]:
    try:
        return [e["code"] for e in resp.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        return []


def _raw(addr: str, method: str, path: str, body: bytes = b"", headers=None) -> tuple[int, dict, bytes]:
    """One request with the path sent exactly as given (requests would resolve `..`)."""
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_manifest_naming_a_missing_blob_is_refused_and_invisible(target: Target):
    base, repo = f"http://{target.push}", f"bad/missing-{token()}"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "cd" * 32]}}).encode()
    config_digest = _upload_blob(base, repo, config)
    missing = "sha256:" + hashlib.sha256(os.urandom(32)).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": missing, "size": 1234}],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    resp = requests.put(f"{base}/v2/{repo}/manifests/1", data=manifest,
                        headers={"Content-Type": DOCKER_MANIFEST}, timeout=10)
    assert (resp.status_code, _codes(resp)) == (400, ["MANIFEST_BLOB_UNKNOWN"]), resp.text
    assert missing in json.dumps(resp.json()["errors"][0].get("detail"))
    for addr in {target.push, *target.pulls[:1]}:
        for ref in ("1", manifest_digest):
            resp = requests.get(f"http://{addr}/v2/{repo}/manifests/{ref}", headers={"Accept": DOCKER_MANIFEST},
                                timeout=10)
            assert resp.status_code == 404, (addr, ref, resp.status_code, resp.text)
            assert _codes(resp) in (["MANIFEST_UNKNOWN"], ["NAME_UNKNOWN"]), (addr, ref, resp.text)


def test_upload_with_wrong_digest_is_digest_invalid_and_stores_nothing(target: Target):
    base, repo = f"http://{target.push}", f"bad/digest-{token()}"
    data = os.urandom(100_000)
    real = "sha256:" + hashlib.sha256(data).hexdigest()
    wrong = "sha256:" + hashlib.sha256(b"not these bytes").hexdigest()
    # Monolithic: POST then PUT with the body.
    loc = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10).headers["Location"]
    resp = requests.put(urljoin(base + "/", loc), params={"digest": wrong}, data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=10)
    assert (resp.status_code, _codes(resp)) == (400, ["DIGEST_INVALID"]), resp.text
    # Chunked: PATCH then an empty PUT.
    loc = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10).headers["Location"]
    resp = requests.patch(urljoin(base + "/", loc), data=data, headers={"Content-Type": "application/octet-stream"},
                          timeout=10)
    assert resp.status_code == 202, resp.text
    resp = requests.put(urljoin(base + "/", resp.headers["Location"]), params={"digest": wrong}, timeout=10)
    assert (resp.status_code, _codes(resp)) == (400, ["DIGEST_INVALID"]), resp.text
    for digest in (wrong, real):
        assert requests.head(f"{base}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 404, digest
        resp = requests.get(f"http://{target.pulls[0]}/v2/{repo}/blobs/{digest}", timeout=30)
        assert resp.status_code == 404, (digest, resp.status_code, resp.text[:300])


# What each registry answers for an out-of-order chunk. Distribution 2.8 (Debian's
# docker-registry) ignores Content-Range on PATCH and appends; v3 and the OCI spec answer 416
# RANGE_INVALID, which is what kraken must do. Either way the blob never becomes visible.
OUT_OF_ORDER = {"reference": (202, []), "kraken": (416, ["RANGE_INVALID"])}


def test_out_of_order_chunk_is_416_and_nothing_partial_is_visible(target: Target):
    base, repo = f"http://{target.push}", f"bad/range-{token()}"
    data = os.urandom(30)
    loc = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=10).headers["Location"]
    octet = {"Content-Type": "application/octet-stream"}
    resp = requests.patch(urljoin(base + "/", loc), data=data[:10], headers={**octet, "Content-Range": "0-9"},
                          timeout=10)
    assert resp.status_code == 202 and resp.headers.get("Range") == "0-9", (resp.status_code, resp.headers)
    loc = resp.headers["Location"]
    resp = requests.patch(urljoin(base + "/", loc), data=data[20:], headers={**octet, "Content-Range": "20-29"},
                          timeout=10)
    assert (resp.status_code, _codes(resp)) == OUT_OF_ORDER[target.kind], (resp.status_code, resp.text)
    loc = resp.headers.get("Location", loc)
    resp = requests.put(urljoin(base + "/", loc), params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()},
                        timeout=10)
    assert resp.status_code >= 400, (resp.status_code, resp.text)
    for blob in (data, data[:10] + data[20:]):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        assert requests.head(f"{base}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 404


# Hostile and invalid names. Distribution's router redirects a path with `..` to its cleaned
# form (301, then 404 without an error body) and answers 404 without a body for upper case:
# kraken answers 404 NAME_UNKNOWN or 400 NAME_INVALID, and never creates anything.
BAD_NAMES = ("../../etc", "Upper/Case", "a/../../etc", "ok/%2e%2e/%2e%2e/etc")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_repository_names_are_refused(target: Target, name: str):
    manifest = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": {}, "layers": []}).encode()
    requests_ = [("POST", f"/v2/{name}/blobs/uploads/", b""), ("GET", f"/v2/{name}/manifests/1", b""),
                 ("GET", f"/v2/{name}/tags/list", b""),
                 ("PUT", f"/v2/{name}/manifests/1", manifest)]
    for method, path, body in requests_:
        status, headers, text = _raw(target.push, method, path, body, {"Content-Type": DOCKER_MANIFEST})
        if target.kind == "reference":
            # Recorded behaviour of distribution 2.8's router.
            if ".." in name or "%2e" in name:
                assert status == 301 and "/v2/" not in headers.get("Location", "/v2/"), (method, path, status)
            else:
                assert status == 404 and b"404 page not found" in text, (method, path, status, text)
            continue
        try:
            codes = [e["code"] for e in json.loads(text)["errors"]]
        except (ValueError, KeyError, TypeError):
            codes = []
        assert (status, codes) in ((404, ["NAME_UNKNOWN"]), (400, ["NAME_INVALID"])), (method, path, status, text)
        if method == "GET":
            # The agent's read-only registry port answers reads the same way.
            status, _, text = _raw(target.pulls[0], method, path)
            assert status in (400, 404) and b"NAME_" in text, (target.pulls[0], path, status, text)
    catalog = requests.get(f"http://{target.push}/v2/_catalog", timeout=10).json()["repositories"]
    assert not [r for r in catalog if "etc" in r.split("/") or r.lower() == "upper/case"], catalog
