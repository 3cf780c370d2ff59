"""A real nginx in front of the proxy and the tracker, with the very nginx.conf the Helm chart
ships (helm/kraken-p2p/files/nginx.conf; its placeholders filled in as the chart's
kraken.nginx.conf helper does): chunked and streamed registry uploads pass through unbuffered
and byte-identical, and a tracker with server.trusted_proxies: 1 records the client's own
address from the X-Forwarded-For nginx sets."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
import requests
import yaml

from common import bencode
from common.devcluster import Proc, free_port
from common.oci import DOCKER_MANIFEST
from tests.integration.helpers import registry_url, wait_for
from tracker.views.announce import decode_compact

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "helm" / "kraken-p2p" / "files" / "nginx.conf"
NGINX = "/usr/sbin/nginx"
MiB = 1 << 20
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _nginx_binary() -> str:
    if os.access(NGINX, os.X_OK):
        return NGINX
    pytest.fail(f"nginx is not installed ({NGINX} missing): `make test` installs it (Debian package nginx-light)",
                pytrace=False)


class Nginx:
    """One nginx master (plus workers) with its own prefix directory: the chart's nginx.conf
    with listen = 127.0.0.1:<free port>, the upstream, and logs in the prefix."""

    def __init__(self, workdir: Path, upstream: str):
        self.binary = _nginx_binary()
        self.prefix = workdir
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.error_log = self.prefix / "error.log"
        self.access_log = self.prefix / "access.log"
        # The same replacement as the chart's kraken.nginx.conf helper, other values.
        conf = NGINX_CONF.read_text()
        for placeholder, value in (("@LISTEN@", self.addr), ("@UPSTREAM@", upstream),
                                   ("@ERROR_LOG@", str(self.error_log)), ("@ACCESS_LOG@", str(self.access_log))):
            assert placeholder in conf, placeholder
            conf = conf.replace(placeholder, value)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(conf)
        self.body_temp = self.prefix / "client_body_temp"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> None:
        args = [self.binary, "-p", f"{self.prefix}/", "-e", str(self.error_log), "-c", str(self.conf)]
        if os.geteuid() == 0:
            # Workers would otherwise drop to `nobody`, which cannot enter pytest's 0700 tmp dirs.
            args += ["-g", "user root;"]
        with open(self.prefix / "nginx.out", "ab") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise AssertionError(f"nginx exited with {self.popen.returncode}:\n{self._logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    message = f"nginx not listening on {self.addr} after {timeout}s:\n{self._logs()}"
                    raise AssertionError(message) from None
                time.sleep(0.05)

    def _logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in (self.prefix / "nginx.out", self.error_log)
                         if p.exists())

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)  # fast shutdown: the master stops its workers
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)  # its own session: the master and its workers
            self.popen.wait(5)

    def url(self, path: str) -> str:
        return f"http://{self.addr}{path}"

    def workers(self) -> list[int]:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.popen.pid:  # ppid
                pids.append(int(stat.parent.name))
        return pids

    def spooled_bodies(self) -> list[str]:
        """Request bodies nginx is holding on disk: files in client_body_temp, and the ones its
        workers have open there (nginx unlinks a body's temp file right after creating it)."""
        found = [str(p) for p in self.body_temp.rglob("*") if p.is_file()] if self.body_temp.exists() else []
        for pid in [self.popen.pid, *self.workers()]:
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith(str(self.body_temp)):
                    found.append(f"pid {pid}: {target}")
        return found


@pytest.fixture(scope="module")
def nginx_proxy(cluster, tmp_path_factory):
    assert cluster.proxy, "the dev cluster has no proxy"
    n = Nginx(tmp_path_factory.mktemp("nginx-proxy"), cluster.proxy)
    n.start()
    yield n
    n.stop()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _start_upload(n: Nginx, name: str) -> str:
    r = requests.post(n.url(f"/v2/{name}/blobs/uploads/"), timeout=10)
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    assert loc.startswith(f"/v2/{name}/blobs/uploads/"), loc
    return loc


def _monolithic(n: Nginx, name: str, data: bytes) -> str:
    loc = _start_upload(n, name)
    r = requests.put(n.url(loc), params={"digest": sha(data)}, data=data, timeout=30)
    assert r.status_code == 201, r.text
    return sha(data)


def test_chunked_push_and_pull_through_nginx(cluster, nginx_proxy):
    n, name, tag = nginx_proxy, "nginx/chunked", "v1"
    layer = os.urandom(5 * MiB) + os.urandom(3 * MiB)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"},
                         "nonce": os.urandom(4).hex()}).encode()

    # POST, two PATCH chunks with Content-Range, PUT ?digest=.
    loc = _start_upload(n, name)
    for start, chunk in ((0, layer[:5 * MiB]), (5 * MiB, layer[5 * MiB:])):
        r = requests.patch(n.url(loc), data=chunk, timeout=60, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(chunk) - 1}"})
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{start + len(chunk) - 1}"
        loc = r.headers["Location"]
    r = requests.put(n.url(loc), params={"digest": sha(layer)}, timeout=60)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha(layer)
    assert r.headers["Location"] == f"/v2/{name}/blobs/{sha(layer)}"

    _monolithic(n, name, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": DOCKER_LAYER, "digest": sha(layer), "size": len(layer)}],
    }, indent=3).encode()
    r = requests.put(n.url(f"/v2/{name}/manifests/{tag}"), data=manifest,
                     headers={"Content-Type": DOCKER_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha(manifest)

    # Pulled back through nginx, byte for byte.
    r = requests.get(n.url(f"/v2/{name}/blobs/{sha(layer)}"), timeout=60)
    assert r.status_code == 200 and r.content == layer
    assert r.headers["Docker-Content-Digest"] == sha(layer)
    r = requests.get(n.url(f"/v2/{name}/blobs/{sha(layer)}"), headers={"Range": f"bytes={MiB}-{2 * MiB - 1}"},
                     timeout=30)
    assert r.status_code == 206 and r.content == layer[MiB:2 * MiB]
    for ref in (tag, sha(manifest)):
        r = requests.get(n.url(f"/v2/{name}/manifests/{ref}"), headers={"Accept": DOCKER_MANIFEST}, timeout=30)
        assert r.status_code == 200 and r.content == manifest
        assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert requests.get(n.url(f"/v2/{name}/tags/list"), timeout=10).json()["tags"] == [tag]

    # The tag is visible where nodes pull from: an agent's registry port (through build-index),
    # and the layer comes through it (P2P from the origins) intact.
    r = requests.get(registry_url(cluster, 0, f"/v2/{name}/manifests/{tag}"),
                     headers={"Accept": DOCKER_MANIFEST}, timeout=30)
    assert r.status_code == 200 and r.content == manifest
    assert r.headers["Docker-Content-Digest"] == sha(manifest)
    r = requests.get(registry_url(cluster, 1, f"/v2/{name}/blobs/{sha(layer)}"), timeout=120)
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha(layer)[7:]

    # Every request went through nginx (its access log names them).
    log = n.access_log.read_text()
    assert f"PATCH /v2/{name}/blobs/uploads/" in log
    assert f"PUT /v2/{name}/manifests/{tag}" in log


def test_streamed_upload_is_not_buffered_by_nginx(cluster, nginx_proxy):
    """A 64 MiB chunked PATCH (no Content-Length, as docker streams a layer): the proxy has
    most of the body on its disk while the client is still sending, and nginx holds nothing in
    client_body_temp. With proxy_request_buffering on (or HTTP/1.0 to the upstream), nginx
    spools the whole body first and the proxy sees no byte before the end: both variants of
    the config were run against this test and fail it at the checkpoint."""
    n, name = nginx_proxy, "nginx/streamed"
    total, chunk, checkpoint = 64 * MiB, MiB, 48 * MiB
    uploads_dir = cluster.workdir / "proxy-uploads"
    loc = _start_upload(n, name)
    uid = loc.rsplit("/", 1)[1]
    data_file = uploads_dir / uid
    assert data_file.exists(), f"upload {uid} not in {uploads_dir}"
    digest = hashlib.sha256()
    seen: dict = {}

    def body():
        sent = 0
        while sent < total:
            piece = os.urandom(chunk)
            digest.update(piece)
            yield piece
            sent += len(piece)
            if sent == checkpoint:
                # Still 16 MiB to send: the proxy must already hold most of what was sent.
                wait_for(lambda: data_file.stat().st_size >= 32 * MiB, 30,
                         "the proxy to receive the streamed body before the client finished "
                         f"(has {data_file.stat().st_size} bytes; nginx spooled {n.spooled_bodies()})")
                seen["proxy_bytes"] = data_file.stat().st_size
                seen["spooled"] = n.spooled_bodies()

    r = requests.patch(n.url(loc), data=body(), timeout=(5, 120),
                       headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{total - 1}"
    assert seen["proxy_bytes"] >= 32 * MiB
    assert seen["spooled"] == [], f"nginx spooled the request body to disk: {seen['spooled']}"
    d = "sha256:" + digest.hexdigest()
    r = requests.put(n.url(r.headers["Location"]), params={"digest": d}, timeout=120)
    assert r.status_code == 201, r.text
    r = requests.head(n.url(f"/v2/{name}/blobs/{d}"), timeout=30)
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == total
    assert n.spooled_bodies() == []
    assert "a client request body is buffered to a temporary file" not in n.error_log.read_text()


# --- The tracker behind nginx ------------------------------------------------------------------

@pytest.fixture(scope="module")
def forwarded_tracker(cluster, tmp_path_factory):
    """A tracker with server.trusted_proxies: 1 (as the chart configures it behind nginx),
    sharing the cluster's Redis and origin ring, and an nginx in front of it."""
    workdir = tmp_path_factory.mktemp("tracker-xff")
    port = free_port()
    data = {"server": {"host": "127.0.0.1", "port": port, "trusted_proxies": 1},
            "redis": {"addr": cluster.redis_addr},
            "origins": {"members": cluster.origins, "replicas": cluster.replicas},
            "log": {"level": "INFO"}}
    cfg = workdir / "tracker.yaml"
    cfg.write_text(yaml.safe_dump(data))
    proc = Proc("tracker-xff", [sys.executable, "-m", "tracker", "--config", str(cfg)],
                workdir / "tracker.log", f"127.0.0.1:{port}")
    proc.start({**os.environ, "PYTHONUNBUFFERED": "1"})
    n = None
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.alive(), f"tracker exited:\n{proc.log_path.read_text()[-3000:]}"
            try:
                if requests.get(f"http://{proc.addr}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "tracker not healthy after 60s"
            time.sleep(0.1)
        n = Nginx(workdir / "nginx", proc.addr)
        n.start()
        yield n
    finally:
        if n is not None:
            n.stop()
        proc.stop()


@pytest.fixture(scope="module")
def nginx_plain_tracker(cluster, tmp_path_factory):
    """nginx in front of the cluster's own tracker, which trusts no proxy."""
    n = Nginx(tmp_path_factory.mktemp("nginx-tracker"), cluster.trackers[0])
    n.start()
    yield n
    n.stop()


def _announce(n: Nginx, source: str, infohash: bytes, peer_id: bytes, port: int,
              headers: dict | None = None) -> list[tuple[str, int]]:
    """A standard client's announce (no ip=) from `source`, through nginx; the peers handed out."""
    query = (f"info_hash={quote_from_bytes(infohash)}&peer_id={quote_from_bytes(peer_id)}&port={port}"
             f"&uploaded=0&downloaded=0&left=1000&compact=1&numwant=50")
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", f"/announce?{query}", headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body
    decoded = bencode.decode(body)
    assert b"failure reason" not in decoded, decoded
    return decode_compact(decoded[b"peers"])


def _scrape(n: Nginx, infohash: bytes) -> dict:
    r = requests.get(n.url(f"/scrape?info_hash={quote_from_bytes(infohash)}"), timeout=10)
    assert r.status_code == 200
    return bencode.decode(r.content)[b"files"][infohash]


def test_tracker_behind_nginx_records_the_client_address(forwarded_tracker):
    n = forwarded_tracker
    infohash = os.urandom(20)
    assert _announce(n, "127.0.0.50", infohash, b"-XF0001-" + os.urandom(6).hex().encode()[:12], 51413) == []
    assert _scrape(n, infohash)[b"incomplete"] == 1
    # Another peer is handed the first one at its real address, not nginx's (127.0.0.1).
    peers = _announce(n, "127.0.0.51", infohash, b"-XF0002-" + os.urandom(6).hex().encode()[:12], 51414)
    assert peers == [("127.0.0.50", 51413)]
    # A client cannot forge its address: nginx appends the real one, and only that hop is trusted.
    _announce(n, "127.0.0.52", infohash, b"-XF0003-" + os.urandom(6).hex().encode()[:12], 51415,
              headers={"X-Forwarded-For": "10.9.9.9"})
    peers = _announce(n, "127.0.0.53", infohash, b"-XF0004-" + os.urandom(6).hex().encode()[:12], 51416)
    assert sorted(peers) == [("127.0.0.50", 51413), ("127.0.0.51", 51414), ("127.0.0.52", 51415)]
    assert _scrape(n, infohash)[b"incomplete"] == 4
    log = n.access_log.read_text()
    assert "127.0.0.50 " in log and "GET /announce?" in log


def test_tracker_without_trusted_proxies_sees_only_nginx(nginx_plain_tracker):
    """The contrast: the same announce through nginx to a tracker that trusts no proxy is
    recorded with nginx's address."""
    n = nginx_plain_tracker
    infohash = os.urandom(20)
    _announce(n, "127.0.0.50", infohash, b"-XF0005-" + os.urandom(6).hex().encode()[:12], 51413)
    peers = _announce(n, "127.0.0.51", infohash, b"-XF0006-" + os.urandom(6).hex().encode()[:12], 51414)
    assert peers == [("127.0.0.1", 51413)]
