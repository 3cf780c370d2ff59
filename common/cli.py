"""krakenctl: run a dev cluster, upload a file as a blob, fetch a blob through an agent."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import requests

from common.digest import Digest
from common.errors import KrakenError


class ProgressBar:
    """One line on stderr, redrawn at most ten times a second."""

    def __init__(self, label: str, total: int | None, stream=sys.stderr):
        self.label, self.total, self.stream = label, total, stream
        self.t0 = time.monotonic()
        self._last = 0.0
        self.tty = stream.isatty()

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.1 if self.tty else 2.0):
            return
        self._last = now
        rate = done / max(now - self.t0, 1e-6) / (1 << 20)
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = (f"{self.label} [{bar:<30}] {frac * 100:5.1f}% {done / (1 << 20):.1f}/"
                    f"{self.total / (1 << 20):.1f} MiB {rate:.1f} MiB/s {note}")
        else:
            text = f"{self.label} {done / (1 << 20):.1f} MiB {rate:.1f} MiB/s {note}"
        self.stream.write(("\r" if self.tty else "") + text.ljust(100)[:120] + ("" if self.tty else "\n"))
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _cluster_file(path: str | None) -> dict:
    p = Path(path or ".devcluster/cluster.json")
    try:
        return json.loads(p.read_text())
    except OSError:
        sys.exit(f"krakenctl: no cluster file at {p}; pass --origin/--agent or start `krakenctl devcluster`")


def cmd_devcluster(args) -> int:
    from common.devcluster import Cluster

    cluster = Cluster(args.workdir, agents=args.agents, origins=args.origins, replicas=args.replicas,
                      trackers=args.trackers, build_index=args.build_index, proxy=not args.no_proxy,
                      backend=args.backend)
    stopping = threading.Event()

    def _stop(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"starting dev cluster in {cluster.workdir} ...", flush=True)
    info = cluster.start()
    print(json.dumps(info, indent=2))
    print(f"healthy; wrote {cluster.workdir / 'cluster.json'}; logs in {cluster.workdir / 'logs'}. "
          "Ctrl-C stops everything.", flush=True)
    try:
        while not stopping.wait(1.0):
            dead = [p.name for p in cluster.procs.values() if not p.alive()]
            if dead:
                print(f"krakenctl: {', '.join(dead)} exited; stopping the cluster", file=sys.stderr)
                return 1
    finally:
        print("stopping ...", flush=True)
        cluster.stop()
    return 0


def cmd_upload(args) -> int:
    from common.ring import HashRing
    from origin.client import ClusterClient, OriginClient

    origin = args.origin or _cluster_file(args.cluster)["origins"][0]
    path = Path(args.file)
    size = path.stat().st_size
    digest = Digest.of_file(path)
    # Any origin knows the ring: ask it where the blob belongs, upload there (the origin
    # copies it to the other replicas).
    locations = OriginClient(origin).locations(digest)
    bar = ProgressBar(f"upload {path.name}", size)
    created = ClusterClient(HashRing(locations, len(locations))).upload(
        args.namespace, digest, path, on_progress=lambda n: bar.update(n))
    bar.update(size, force=True)
    bar.close()
    print(digest)
    if not created:
        print("(the origins already had it)", file=sys.stderr)
    return 0


def cmd_fetch(args) -> int:
    agent = args.agent or _cluster_file(args.cluster)["agents"][0]["server"]
    digest = Digest.parse(args.digest)
    out = Path(args.output or digest.hex)
    base = f"http://{agent}"
    result: dict = {}

    def get():
        try:
            url = f"{base}/namespace/{quote(args.namespace, safe='')}/blobs/{digest}"
            result["resp"] = requests.get(url, stream=True,
                                          timeout=(3, args.timeout))
        except requests.RequestException as exc:
            result["error"] = exc

    t = threading.Thread(target=get, daemon=True)
    t.start()
    bar = ProgressBar(f"p2p {digest.hex[:12]}", None)
    # While the agent downloads over P2P the GET blocks; show the swarm progress meanwhile.
    while t.is_alive():
        t.join(0.2)
        try:
            st = requests.get(f"{base}/blobs/{digest}/status", timeout=2).json()
        except (requests.RequestException, ValueError):
            continue
        if st.get("total"):
            bar.total = st["total"]
        bar.update(st.get("done", 0), f"{st.get('state', '')} peers={st.get('peers', '-')}")
    bar.close()
    if "error" in result:
        sys.exit(f"krakenctl: agent {agent} unreachable: {result['error']}")
    resp = result["resp"]
    if resp.status_code != 200:
        try:
            message = resp.json().get("error")
        except ValueError:
            message = resp.text[:200]
        sys.exit(f"krakenctl: HTTP {resp.status_code}: {message}")
    h = hashlib.sha256()
    total = int(resp.headers.get("Content-Length", 0)) or None
    bar = ProgressBar(f"save {out.name}", total)
    tmp = out.with_name(out.name + ".part")
    done = 0
    with open(tmp, "wb") as f:
        for chunk in resp.iter_content(1 << 20):
            f.write(chunk)
            h.update(chunk)
            done += len(chunk)
            bar.update(done)
    bar.update(done, force=True)
    bar.close()
    if h.hexdigest() != digest.hex:
        tmp.unlink()
        sys.exit(f"krakenctl: content does not match {digest}")
    os.replace(tmp, out)
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="krakenctl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("devcluster", help="run redis, trackers, origins, build-index, the proxy and agents "
                                          "on this machine")
    d.add_argument("--agents", type=int, default=3)
    d.add_argument("--origins", type=int, default=3)
    d.add_argument("--replicas", type=int, default=2)
    d.add_argument("--trackers", type=int, default=1)
    d.add_argument("--build-index", type=int, default=1, help="build-index instances (sharing the redis)")
    d.add_argument("--no-proxy", action="store_true", help="leave the proxy out")
    d.add_argument("--backend", choices=("fs", "none"), default="fs",
                   help="storage backend of origins and build-index: a directory in the workdir (fs), or none")
    d.add_argument("--workdir", default=".devcluster")
    d.set_defaults(fn=cmd_devcluster)

    u = sub.add_parser("upload", help="upload a file to the origins as a blob; prints its digest")
    u.add_argument("file")
    u.add_argument("--namespace", default="default")
    u.add_argument("--origin", help="host:port of any origin (default: first in the cluster file)")
    u.add_argument("--cluster", help="cluster.json (default .devcluster/cluster.json)")
    u.set_defaults(fn=cmd_upload)

    f = sub.add_parser("fetch", help="fetch a blob through an agent, with progress")
    f.add_argument("digest")
    f.add_argument("-o", "--output", help="file to write (default: the hex digest)")
    f.add_argument("--namespace", default="default")
    f.add_argument("--agent", help="host:port of an agent server (default: first in the cluster file)")
    f.add_argument("--cluster", help="cluster.json (default .devcluster/cluster.json)")
    f.add_argument("--timeout", type=float, default=3600)
    f.set_defaults(fn=cmd_fetch)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KrakenError as exc:
        sys.exit(f"krakenctl: {exc}")


if __name__ == "__main__":
    sys.exit(main())
