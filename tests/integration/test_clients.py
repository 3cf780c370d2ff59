"""Standard and command-line clients against the cluster: aria2c with the tracker's
.torrent, krakenctl upload/fetch, and `krakenctl devcluster` start-up and clean stop."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from common.devcluster import free_port
from common.procstat import stat_fields
from tests.integration.helpers import upload, wait_for

KRAKENCTL = [sys.executable, "-m", "common.cli"]
# Standard clients must never reach past loopback: no proxies inherited from the caller.
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def test_aria2c_downloads_a_blob_with_the_trackers_torrent(cluster, tmp_path):
    aria2c = shutil.which("aria2c")
    assert aria2c, "aria2c is not installed; `make test` installs Debian's aria2"
    data = os.urandom(8 << 20)
    digest = upload(cluster, data, tmp_path, namespace="debug")
    resp = requests.get(f"http://{cluster.trackers[0]}/namespace/debug/blobs/{digest}/metainfo", timeout=10)
    assert resp.status_code == 200
    torrent = tmp_path / "blob.torrent"
    torrent.write_bytes(resp.content)
    out = tmp_path / "aria2"
    proc = subprocess.run(
        [aria2c, "--dir", str(out), "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
         "--bt-enable-lpd=false", "--enable-peer-exchange=false", f"--listen-port={free_port()}",
         "--bt-stop-timeout=60", "--file-allocation=none", "--summary-interval=0",
         "--console-log-level=warn", "--check-certificate=false", str(torrent)],
        capture_output=True, text=True, timeout=120, env=CLEAN_ENV,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = out / digest.hex
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest.hex


def test_krakenctl_upload_then_fetch_through_an_agent(cluster, tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(5 << 20))
    cluster_file = cluster.workdir / "cluster.json"
    up = subprocess.run([*KRAKENCTL, "upload", str(src), "--namespace", "cli", "--cluster", str(cluster_file)],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    digest = up.stdout.strip()
    assert digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "fetched.bin"
    down = subprocess.run([*KRAKENCTL, "fetch", digest, "--namespace", "cli", "-o", str(dest),
                           "--agent", cluster.agents[5]["server"]], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert dest.read_bytes() == src.read_bytes()
    assert "MiB" in down.stderr  # the progress bar was drawn
    missing = subprocess.run([*KRAKENCTL, "fetch", "sha256:" + "0" * 64, "--agent", cluster.agents[5]["server"],
                              "-o", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "404" in missing.stderr
    assert not (tmp_path / "none").exists()


def test_devcluster_writes_cluster_json_and_stops_everything_on_sigint(tmp_path):
    workdir = tmp_path / "dev"
    proc = subprocess.Popen([*KRAKENCTL, "devcluster", "--agents", "2", "--origins", "2", "--workdir", str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (workdir / "cluster.json").exists() or proc.poll() is not None, 90, "cluster.json")
        info = json.loads((workdir / "cluster.json").read_text())
        assert set(info) >= {"redis", "trackers", "origins", "build_index", "proxy", "agents"}
        assert len(info["origins"]) == 2 and len(info["agents"]) == 2
        ips = {a["server"].split(":")[0] for a in info["agents"]}
        assert len(ips) == 2 and all(ip.startswith("127.") for ip in ips)
        for addr in info["trackers"] + info["origins"] + [a["server"] for a in info["agents"]]:
            assert requests.get(f"http://{addr}/health", timeout=5).status_code == 200
        children = _descendants(proc.pid)
        assert len(children) >= 6
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        assert proc.returncode == 0
        time.sleep(0.5)
        assert [pid for pid in children if Path(f"/proc/{pid}").exists() and not _zombie(pid)] == []
    finally:
        if proc.poll() is None:
            proc.kill()


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    parent = {int(c): int(p) for c, p in (line.split() for line in out.splitlines())}
    found, frontier = [], {pid}
    while frontier:
        frontier = {c for c, p in parent.items() if p in frontier}
        found.extend(frontier)
    return found


def _zombie(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] == "Z"
