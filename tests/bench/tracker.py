"""Tracker benchmark: what one announce costs as a swarm grows.

    .venv/bin/python -m tests.bench.tracker [--sizes 4,200,1000,5000,20000] [--requests 200] [--numwant 200]

Starts redis-server and one tracker (gunicorn, as deployed), fills one torrent's swarm with
--sizes peers through the tracker's own peer store (the same writes announces make), then
times --requests announces against it: re-announces of random members (each is handed the
peers that joined before it, so on average half the swarm) and new peers joining at the end
(handed everyone). Prints the tracker's and redis-server's CPU per announce, from /proc, the
client's wall time, and the same for GET /health in the same run: the floor of any request
to a gunicorn + Flask process.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import redis
import requests

from common.devcluster import Cluster
from tests.bench import exit_on_sigterm, group_cpu_seconds
from tracker.peerstore import PeerInfo, RedisPeerStore


def _peer(n: int) -> PeerInfo:
    return PeerInfo(peer_id=b"-KB0001-" + n.to_bytes(12, "big"), ip=f"127.1.{n >> 8 & 255}.{n & 255}",
                    port=6881 + n % 1000, complete=n % 7 == 0, rack=f"r{n % 25}", zone=f"z{n % 5}")


def _announce_query(infohash: bytes, p: PeerInfo, numwant: int, event: str) -> str:
    return urllib.parse.urlencode({
        "info_hash": infohash, "peer_id": p.peer_id, "port": p.port, "ip": p.ip, "uploaded": 0,
        "downloaded": 0, "left": 0 if p.complete else 1000, "compact": 1, "numwant": numwant,
        "event": event, "rack": p.rack, "zone": p.zone,
    })


class Meter:
    """CPU of the tracker's and redis-server's process groups, and wall time, over a block."""

    def __init__(self, tracker_pgid: int, redis_pgid: int):
        self.pgids = (tracker_pgid, redis_pgid)

    def run(self, fn, n: int) -> tuple[float, float, float]:
        c0 = group_cpu_seconds(self.pgids)
        w0 = time.perf_counter()
        for i in range(n):
            fn(i)
        wall = time.perf_counter() - w0
        c1 = group_cpu_seconds(self.pgids)
        t, r = (c1[g] - c0[g] for g in self.pgids)
        return t / n * 1e3, r / n * 1e3, wall / n * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.tracker", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="4,200,1000,5000,20000", help="swarm sizes, comma-separated")
    p.add_argument("--requests", type=int, default=200, help="announces timed per size and kind")
    p.add_argument("--numwant", type=int, default=200, help="as libtorrent asks by default")
    args = p.parse_args(argv)
    exit_on_sigterm()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as tmp:
        cluster = Cluster(Path(tmp), agents=0, origins=1, replicas=1, build_index=0, proxy=False, backend="none")
        cluster.start()
        try:
            tracker = cluster.trackers[0]
            host, port = cluster.redis_addr.rsplit(":", 1)
            store = RedisPeerStore(redis.Redis(host=host, port=int(port)), ttl=60)
            meter = Meter(cluster.procs["tracker-0"].popen.pid, cluster.procs["redis"].popen.pid)
            s = requests.Session()
            rng = random.Random(1)

            def get(path: str) -> None:
                r = s.get(f"http://{tracker}{path}")
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:200]}")

            for _ in range(50):  # warm the worker up
                get("/health")
            health = meter.run(lambda i: get("/health"), args.requests)
            print(f"{'swarm':>6} {'kind':>11} | {'tracker CPU':>11} {'redis CPU':>9} {'wall':>8} | vs /health CPU")
            print(f"{'-':>6} {'/health':>11} | {health[0]:8.2f} ms {health[1]:6.2f} ms {health[2]:5.2f} ms |")
            for n, size in enumerate(sizes):
                infohash = bytes([n + 1]) * 20
                members = [_peer(i) for i in range(size)]
                for member in members:
                    store.update(infohash, member)
                kinds = {
                    "re-announce": [(m, "") for m in rng.choices(members, k=args.requests)],
                    "join": [(_peer(size + i), "started") for i in range(args.requests)],
                }
                for kind, calls in kinds.items():
                    t, r, w = meter.run(
                        lambda i, calls=calls, infohash=infohash: get(
                            "/announce?" + _announce_query(infohash, calls[i][0], args.numwant, calls[i][1])),
                        args.requests)
                    print(f"{size:>6} {kind:>11} | {t:8.2f} ms {r:6.2f} ms {w:5.2f} ms | {t / health[0]:5.1f}x",
                          flush=True)
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
