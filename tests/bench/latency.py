"""Latency benchmark: the fixed cost of the P2P path and time to first byte.

    .venv/bin/python -m tests.bench.latency [--blobs 20] [--rate 0] [--ttfb-size 256] [--link limiter|netns]
                                            [--settle 0]

cold small blob: for each of --blobs fresh 1 MiB blobs, a direct GET from the origin, then a
GET through an agent that has never seen it (metainfo, announce, connect, download, verify),
right after its upload or --settle seconds later. Prints p50/p90 of both, the ratio of the
p50s and the median of the per-blob ratios.

time to first byte: one agent asks for a fresh --ttfb-size MiB blob while every host is capped
at --ttfb-rate MiB/s; prints when its first byte arrived and when the last did. Then the same
agent, warm now (as an agent that has run for a while is, and its origin), asks for a second
fresh blob of that size: when its first byte and first MiB arrived.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from common.devcluster import Cluster
from common.digest import Digest
from origin.client import OriginClient
from tests.bench import MiB, exit_on_sigterm, netns
from tests.bench.swarm import make_blob, wait_metainfo
from tests.bench.swarm_report import nearest_rank

NAMESPACE = "bench"


def timed_get(url: str, stop_after: int = 0) -> tuple[float, float, int, float]:
    """(seconds to the first body bytes, to the last, bytes, seconds to the first MiB) of one
    GET, reading no further than `stop_after` bytes if given. The body is read 64 KiB at a
    time: the first read returns once the agent has sent the blob's first piece (256 KiB or
    more) or the first 64 KiB of a direct GET."""
    t0 = time.perf_counter()
    ttfb = first_mib = None
    n = 0
    with requests.get(url, stream=True, timeout=(5, 600)) as resp:
        resp.raise_for_status()
        for chunk in resp.iter_content(64 << 10):
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            n += len(chunk)
            if first_mib is None and n >= MiB:
                first_mib = time.perf_counter() - t0
            if stop_after and n >= stop_after:
                break
    total = time.perf_counter() - t0
    return ttfb or total, total, n, first_mib or total


def in_namespace(ns: str | None, fn, *args):
    """Runs fn in a thread inside network namespace ns (None: this thread's own)."""
    if ns is None:
        return fn(*args)
    out: dict = {}

    def work():
        try:
            netns.enter(ns)
            out["v"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            out["e"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


def start_cluster(root: Path, agents: int, rate: int, link: str):
    network = hosts = None
    if link == "netns":
        network = netns.Network(rate)
        network.create_hub()
        hosts = netns.NetnsHosts(network)
        netns.enter(network.hub)
    lt_rate = rate if link == "limiter" else 0
    torrent = {"torrent": {"upload_rate_limit": lt_rate, "download_rate_limit": lt_rate}}
    cluster = Cluster(root, agents=agents, origins=1, replicas=1, hosts=hosts, backend="none",
                      origin_config=torrent, agent_config=torrent)
    try:
        cluster.start()
    except BaseException:
        if network:
            netns.enter(None)
            network.destroy()
        raise
    return cluster, network, hosts


def stop_cluster(cluster, network) -> None:
    cluster.stop()
    if network:
        netns.enter(None)
        network.destroy()


def upload(cluster, hosts, path: Path, digest: Digest) -> None:
    origin = cluster.origins[0]
    ns = hosts.namespace("origin", 0) if hosts else None
    in_namespace(ns, lambda: (OriginClient(origin).upload(NAMESPACE, digest, path), wait_metainfo(origin, digest)))


def cold_small(args, root: Path) -> dict:
    cluster, network, hosts = start_cluster(root / "cold", args.agents, int(args.rate * MiB), args.link)
    try:
        direct, via_agent = [], []
        for i in range(args.blobs):
            path = root / f"small-{i}"
            digest = make_blob(path, MiB)
            upload(cluster, hosts, path, digest)
            # Right after the upload (the default) the origin may still be announcing the
            # blob; after a pause, both GETs start from an idle host
            # (tests/bench/PERFORMANCE-HISTORY.md, session 13).
            time.sleep(args.settle)
            origin_url = f"http://{cluster.origins[0]}/namespace/{NAMESPACE}/blobs/{digest}"
            agent = i % args.agents
            agent_url = f"http://{cluster.agents[agent]['server']}/namespace/{NAMESPACE}/blobs/{digest}"
            # Both from the agent's host: what a docker daemon there would see.
            ns = hosts.namespace("agent", agent) if hosts else None
            direct.append(in_namespace(ns, timed_get, origin_url)[1])
            via_agent.append(in_namespace(ns, timed_get, agent_url)[1])
        d, a = sorted(direct), sorted(via_agent)
        return {"blobs": args.blobs, "direct_ms": {"p50": nearest_rank(d, 50) * 1e3, "p90": nearest_rank(d, 90) * 1e3},
                "agent_ms": {"p50": nearest_rank(a, 50) * 1e3, "p90": nearest_rank(a, 90) * 1e3,
                             "mean": statistics.fmean(a) * 1e3},
                "ratio_p50": nearest_rank(a, 50) / nearest_rank(d, 50),
                # Each blob's two GETs run back to back: the median of their ratios is
                # steadier than the ratio of p50s while the host's speed drifts.
                "ratio_median_per_blob": statistics.median(x / y for x, y in zip(via_agent, direct)),
                "settle_s": args.settle}
    finally:
        stop_cluster(cluster, network)


def first_byte(args, root: Path) -> dict:
    rate = int(args.ttfb_rate * MiB)
    cluster, network, hosts = start_cluster(root / "ttfb", 2, rate, args.link)
    try:
        path = root / "big"
        digest = make_blob(path, int(args.ttfb_size * MiB))
        upload(cluster, hosts, path, digest)
        url = f"http://{cluster.agents[0]['server']}/namespace/{NAMESPACE}/blobs/{digest}"
        ns = hosts.namespace("agent", 0) if hosts else None
        ttfb, total, n, first_mib = in_namespace(ns, timed_get, url)
        assert n == path.stat().st_size
        # The agent and its origin have moved a whole blob now; a second one, as a host that
        # has run for a while asks for its next image.
        path.unlink()
        digest = make_blob(path, int(args.ttfb_size * MiB))
        upload(cluster, hosts, path, digest)
        url = f"http://{cluster.agents[0]['server']}/namespace/{NAMESPACE}/blobs/{digest}"
        warm_ttfb, _, _, warm_first_mib = in_namespace(ns, timed_get, url, MiB)
        return {"size_mib": args.ttfb_size, "rate_mib_s": args.ttfb_rate, "ttfb_s": ttfb, "total_s": total,
                "first_mib_s": first_mib, "ideal_s": args.ttfb_size / args.ttfb_rate,
                "warm_ttfb_s": warm_ttfb, "warm_first_mib_s": warm_first_mib}
    finally:
        stop_cluster(cluster, network)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--blobs", type=int, default=20)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--rate", type=float, default=0, help="per-host cap for the cold small blobs, MiB/s (0 = none)")
    p.add_argument("--ttfb-size", type=float, default=256)
    p.add_argument("--ttfb-rate", type=float, default=8)
    p.add_argument("--link", choices=["limiter", "netns"], default="limiter")
    p.add_argument("--settle", type=float, default=0,
                   help="seconds between a cold blob's upload and its GETs (0: at once)")
    p.add_argument("--skip", choices=["cold", "ttfb"], action="append", default=[])
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    args = p.parse_args(argv)
    exit_on_sigterm()
    root = Path(tempfile.mkdtemp(prefix="kraken-latency-"))
    results: dict = {"link": args.link}
    try:
        if "cold" not in args.skip:
            results["cold_small_blob"] = r = cold_small(args, root)
            print(f"cold 1 MiB blob ({args.link}, rate {args.rate:g} MiB/s): direct GET from the origin p50 "
                  f"{r['direct_ms']['p50']:.1f} ms p90 {r['direct_ms']['p90']:.1f} ms; through an agent p50 "
                  f"{r['agent_ms']['p50']:.1f} ms p90 {r['agent_ms']['p90']:.1f} ms; "
                  f"ratio of p50s {r['ratio_p50']:.2f}x, median per-blob ratio {r['ratio_median_per_blob']:.2f}x"
                  + (f" (each {args.settle:g} s after its upload)" if args.settle else ""),
                  flush=True)
        if "ttfb" not in args.skip:
            results["first_byte"] = r = first_byte(args, root)
            print(f"time to first byte ({args.link}): {r['size_mib']:g} MiB at {r['rate_mib_s']:g} MiB/s: "
                  f"first byte {r['ttfb_s']:.3f} s, first MiB {r['first_mib_s']:.3f} s, "
                  f"last byte {r['total_s']:.1f} s (ideal {r['ideal_s']:.1f} s); the next blob through that "
                  f"agent, warm now: first byte {r['warm_ttfb_s']:.3f} s, first MiB {r['warm_first_mib_s']:.3f} s",
                  flush=True)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"latency-{args.link}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
