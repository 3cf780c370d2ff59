"""Swarm benchmark: one blob, one origin, N agents asking for it at the same instant.

Every host (the origin and each agent) is capped at R MiB/s up and down, so no agent can
finish before S/R seconds (the per-host ideal). With BitTorrent sharing the whole swarm
should come close to that while the origin uploads about one copy. The baseline repeats
the run on a fresh cluster whose tracker hands out only origins (announce.origins_only):
P2P sharing is off, the origin's R is split N ways and times grow towards N*S/R.

    .venv/bin/python -m tests.bench.swarm --agents 20 --rate 8 --size 256

Percentiles are nearest-rank (always an observed time): p99 is the slowest agent when
N < 100. Writes OUT/swarm-<timestamp>.json (parameters, per-agent times, summaries) and
OUT/swarm-<timestamp>.png (completion-time CDF of the runs).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

from common.config import merge
from common.devcluster import Cluster
from common.digest import Digest
from origin.client import OriginClient
from tests.bench import MiB, exit_on_sigterm, group_cpu_seconds, host_cpu_jiffies, netns
from tests.bench.swarm_report import AgentResult, RunResult, plot, print_report, rate_label, speedup, summarize

NAMESPACE = "bench"
# Torrent counters are refreshed every progress_interval (0.5 s): wait a few refreshes.
COUNTER_SETTLE = 1.5


def make_blob(path: Path, size: int) -> Digest:
    """Random bytes (incompressible, unseen by any cache), hashed while written."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for offset in range(0, size, 4 * MiB):
            chunk = os.urandom(min(4 * MiB, size - offset))
            h.update(chunk)
            f.write(chunk)
    return Digest(h.hexdigest())


def cluster_overrides(rate_bps: int, baseline: bool, budget: float, lt_settings: dict | None = None,
                      tracker: dict | None = None, origin_lt: dict | None = None, agent_config: dict | None = None,
                      origin_config: dict | None = None) -> dict:
    """Config overrides: the same cap on every host; agents must not give up on a slow
    download before the benchmark does. In the baseline the origin unchokes only a few
    agents at a time, so an agent may legitimately receive nothing for minutes: the stall
    timeout is as long as the run."""
    torrent = {"torrent": {"upload_rate_limit": rate_bps, "download_rate_limit": rate_bps,
                           "settings": dict(lt_settings or {})}}
    download = {"stall_timeout": max(600.0, budget), "timeout": max(3600.0, budget)}
    announce = {**(tracker or {}), **({"origins_only": True} if baseline else {})}
    return {
        "tracker_config": {"announce": announce} if announce else {},
        "origin_config": merge(merge(torrent, {"torrent": {
            "settings": {k: v for k, v in (origin_lt or {}).items() if k != "super_seeding"},
            **({"super_seeding": bool(origin_lt["super_seeding"])} if "super_seeding" in (origin_lt or {}) else {}),
        }}), origin_config or {}),
        "agent_config": merge(merge(torrent, {"download": download}), agent_config or {}),
    }


def payload_bytes(addr: str, direction: str = "sent") -> int:
    """kraken_torrent_{sent,recv}_payload_bytes from a host's /metrics."""
    name = f"kraken_torrent_{direction}_payload_bytes "
    resp = requests.get(f"http://{addr}/metrics", timeout=10)
    resp.raise_for_status()
    for line in resp.text.splitlines():
        if line.startswith(name):
            return int(float(line.split()[1]))
    raise RuntimeError(f"{addr}: no {name.strip()} in /metrics")


def wait_metainfo(addr: str, digest: Digest, timeout: float = 60) -> None:
    """The origin builds the torrent after commit; agents would only wait on 202 meanwhile."""
    url = f"http://{addr}/namespace/{NAMESPACE}/blobs/{digest}/metainfo"
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = requests.get(url, timeout=5).status_code
        except requests.RequestException as exc:
            status = str(exc)
        if status == 200:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"origin {addr}: metainfo of {digest} not ready after {timeout}s ({status})")
        time.sleep(0.1)


def fetch_one(addr: str, digest: Digest, size: int, t0: float, deadline: float) -> AgentResult:
    """GETs the blob from one agent, hashing and discarding the body. The read timeout is
    the time left until the deadline, since the agent sends nothing until it has the blob."""
    url = f"http://{addr}/namespace/{NAMESPACE}/blobs/{digest}"
    result = AgentResult(addr)
    h, got = hashlib.sha256(), 0
    try:
        with requests.get(url, stream=True, timeout=(5, max(1.0, deadline - time.monotonic()))) as resp:
            result.first_byte = time.monotonic() - t0
            if resp.status_code != 200:
                result.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                return result
            for chunk in resp.iter_content(chunk_size=MiB):
                h.update(chunk)
                got += len(chunk)
                if time.monotonic() > deadline:
                    result.error = f"deadline passed while streaming ({got}/{size} bytes)"
                    return result
        done = time.monotonic() - t0
    except requests.RequestException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    if got != size or h.hexdigest() != digest.hex:
        result.error = f"wrong body: {got} bytes, sha256:{h.hexdigest()}"
        return result
    result.seconds, result.error = done, None
    return result


def fetch_all(agents: list[str], digest: Digest, size: int, budget: float,
              namespaces: list[str] | None = None) -> tuple[list[AgentResult], float]:
    """One thread per agent, all released at one instant; every time is measured from it.
    With emulated hosts each thread joins its agent's namespace first, as the host's own
    docker daemon would: the agent-to-client copy is local, not over the shaped link."""
    results = [AgentResult(a) for a in agents]
    go = threading.Event()
    clock: dict[str, float] = {}

    def worker(i: int) -> None:
        if namespaces:
            netns.enter(namespaces[i])
        go.wait()
        results[i] = fetch_one(agents[i], digest, size, clock["t0"], clock["deadline"])

    threads = [threading.Thread(target=worker, args=(i,), name=f"fetch-{i}", daemon=True)
               for i in range(len(agents))]
    for th in threads:
        th.start()
    clock["t0"] = time.monotonic()
    clock["deadline"] = clock["t0"] + budget
    go.set()
    for th in threads:
        # Every request has its own timeout; the margin only covers a thread between reads.
        th.join(max(0.0, clock["deadline"] + 10 - time.monotonic()))
    return list(results), time.monotonic() - clock["t0"]


def upload_blob(origin: str, digest: Digest, blob: Path, namespace: str | None) -> None:
    """Uploads from inside the origin's namespace when hosts are emulated (a local copy,
    not 256 MiB through its shaped link), then waits for the metainfo."""
    error: list[BaseException] = []

    def work() -> None:
        try:
            if namespace:
                netns.enter(namespace)
            OriginClient(origin).upload(NAMESPACE, digest, blob)
            wait_metainfo(origin, digest)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            error.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if error:
        raise error[0]


def warm_up(cluster: Cluster, blob: Path, hosts, namespaces, mode: str) -> None:
    """Every agent fetches one fresh 1 MiB blob, untimed, so the timed run sees agents and
    an origin that have moved data before, as long-running ones have. A session's first
    transfer under libtorrent's rate limiter is slow to start (measured: the first 1 MiB
    blob took 1.1-1.3 s on each fresh agent, a 32 MiB blob fetched next reached its first
    byte in 0.27-0.30 s); --warm separates that one-time cost from the swarm's behaviour."""
    digest = make_blob(blob, MiB)
    upload_blob(cluster.origins[0], digest, blob, hosts.namespace("origin", 0) if hosts else None)
    t0 = time.monotonic()
    results, _ = fetch_all([a["server"] for a in cluster.agents], digest, MiB, 120, namespaces)
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"warm-up fetch failed on {len(failed)} agents: {failed[0].agent}: {failed[0].error}")
    print(f"[{mode}] warm-up: every agent fetched a 1 MiB blob in {time.monotonic() - t0:.1f} s", flush=True)


def run_once(mode: str, root: Path, blob: Path, digest: Digest, args: argparse.Namespace) -> RunResult:
    """A fresh cluster (baseline: tracker hands out origins only), one upload, N fetches.
    --link limiter caps each host with libtorrent's rate limiter; --link netns puts each
    origin and agent in its own network namespace behind a tc-shaped veth link instead."""
    rate = int(args.rate * MiB)
    with netns.shaped(rate) if args.link == "netns" else contextlib.nullcontext() as network:
        hosts = netns.NetnsHosts(network) if network else None
        return _run_cluster(mode, root, blob, digest, args, rate, hosts)


def _run_cluster(mode: str, root: Path, blob: Path, digest: Digest, args: argparse.Namespace, rate: int,
                 hosts: netns.NetnsHosts | None) -> RunResult:
    cluster = Cluster(root / mode, agents=args.agents, origins=1, replicas=1, trackers=1, hosts=hosts, backend="none",
                      **cluster_overrides(rate if args.link == "limiter" else 0, mode == "baseline", args.budget,
                                        args.lt, args.announce, args.origin_lt, args.agent_config,
                                        args.origin_config))
    try:
        print(f"[{mode}] starting cluster ({args.link}): 1 tracker, 1 origin, {args.agents} agents ...", flush=True)
        cluster.start(timeout=max(90, 5 * args.agents))
        origin = cluster.origins[0]
        upload_blob(origin, digest, blob, hosts.namespace("origin", 0) if hosts else None)
        namespaces = [hosts.namespace("agent", i) for i in range(args.agents)] if hosts else None
        agent_before: dict[str, tuple[int, int]] = {}
        if args.warm:
            warm_up(cluster, root / f"warm-{mode}", hosts, namespaces, mode)
            agent_before = {a["server"]: (payload_bytes(a["server"]), payload_bytes(a["server"], "recv"))
                            for a in cluster.agents}
        before = payload_bytes(origin)
        # CPU time per host during the fetch: agents' processes, by agent address.
        groups = {a["server"]: cluster.procs[f"agent-{i}"].popen.pid for i, a in enumerate(cluster.agents)}
        groups["origin"] = cluster.procs["origin-0"].popen.pid
        cpu_before = group_cpu_seconds(groups.values())
        host_before = host_cpu_jiffies()
        print(f"[{mode}] {args.agents} agents fetching {args.size:g} MiB at {rate_label(args)} "
              f"(deadline {args.budget:.0f} s) ...", flush=True)
        clients_cpu = time.process_time()
        results, wall = fetch_all([a["server"] for a in cluster.agents], digest, blob.stat().st_size,
                                  args.budget, namespaces)
        clients_cpu = time.process_time() - clients_cpu
        cpu_after = group_cpu_seconds(groups.values())
        host_after = host_cpu_jiffies()
        cpu_used = {k: cpu_after[g] - cpu_before[g] for k, g in groups.items()}
        time.sleep(COUNTER_SETTLE)
        after = payload_bytes(origin)
        for r in results:
            with contextlib.suppress(requests.RequestException, RuntimeError):
                sent0, recv0 = agent_before.get(r.agent, (0, 0))
                r.sent_bytes = payload_bytes(r.agent) - sent0
                r.recv_bytes = payload_bytes(r.agent, "recv") - recv0
            r.cpu_seconds = cpu_used.get(r.agent)
        busy, total = (a - b for a, b in zip(host_after, host_before))
        run = RunResult(mode, results, after - before, wall, cpu_used["origin"], clients_cpu,
                        busy / total if total else None)
        for r in (r for r in results if r.error):
            print(f"[{mode}] agent {r.agent} failed: {r.error}", flush=True)
        print(f"[{mode}] done: {len(run.times)}/{args.agents} agents in {wall:.1f} s", flush=True)
        return run
    finally:
        cluster.stop()


def default_budget(args: argparse.Namespace) -> float:
    """Seconds one run may take: twice the baseline's N*S/R plus start-up slack, or, when
    unlimited, enough for 20 MiB/s delivered in total."""
    if args.rate > 0:
        return 2 * args.agents * args.size / args.rate + 120
    return max(300.0, args.agents * args.size / 20)


def _setting(text: str, parser: argparse.ArgumentParser) -> tuple[str, bool | int | str]:
    name, sep, value = text.partition("=")
    if not sep:
        parser.error(f"{text!r}: want NAME=VALUE")
    if value in ("true", "false"):  # libtorrent's bool settings take no 0/1
        return name, value == "true"
    return name, int(value) if value.lstrip("-").isdigit() else value


def _overrides(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """["a.b=1", ...] -> {"a": {"b": 1}}: config overrides, each value in JSON."""
    out: dict = {}
    for text in items:
        dotted, sep, value = text.partition("=")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"{text!r}: want DOTTED.KEY=JSON")
        if not sep:
            parser.error(f"{text!r}: want DOTTED.KEY=JSON")
        *path, last = dotted.split(".")
        node = out
        for key in path:
            node = node.setdefault(key, {})
        node[last] = parsed
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.swarm", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=20, help="number of agents (default 20)")
    p.add_argument("--rate", type=float, default=8, help="per-host up/down cap in MiB/s, 0 = unlimited (default 8)")
    p.add_argument("--size", type=float, default=256, help="blob size in MiB (default 256)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results directory")
    p.add_argument("--mode", choices=["p2p", "baseline", "both"], default="both")
    p.add_argument("--no-baseline", action="store_true", help="same as --mode p2p")
    p.add_argument("--timeout", type=float, default=None, dest="budget",
                   help="seconds one run may take (default: 2*N*S/R + 120)")
    p.add_argument("--link", choices=["limiter", "netns"], default="limiter",
                   help="cap hosts with libtorrent's rate limiter, or emulate NICs: one network namespace "
                        "per host behind a veth link shaped by tc (default limiter)")
    p.add_argument("--lt", action="append", default=[], metavar="NAME=VALUE",
                   help="extra libtorrent setting for every agent and origin (repeatable), for tuning")
    p.add_argument("--origin-lt", action="append", default=[], metavar="NAME=VALUE",
                   help="extra libtorrent setting for the origin only (repeatable)")
    p.add_argument("--announce", action="append", default=[], metavar="NAME=VALUE",
                   help="tracker announce setting (repeatable), e.g. interval=5")
    p.add_argument("--agent-config", action="append", default=[], metavar="DOTTED.KEY=JSON",
                   help="agent config override (repeatable), e.g. download.stripes=false")
    p.add_argument("--origin-config", action="append", default=[], metavar="DOTTED.KEY=JSON",
                   help="origin config override (repeatable), e.g. torrent.max_peer_requests=16")
    p.add_argument("--keep", action="store_true", help="keep the work dir (cluster logs) afterwards")
    p.add_argument("--warm", action="store_true",
                   help="before the timed run, every agent fetches a 1 MiB blob (untimed): agents that have "
                        "moved data before, as long-running ones have")
    args = p.parse_args(argv)
    if not 1 <= args.agents <= 200:
        p.error("--agents must be 1..200 (one 127.0.0.x address each)")
    if args.size <= 0 or args.rate < 0:
        p.error("--size must be > 0 and --rate >= 0")
    args.mode = "p2p" if args.no_baseline else args.mode
    args.lt = dict(_setting(kv, p) for kv in args.lt)
    args.announce = dict(_setting(kv, p) for kv in args.announce)
    args.origin_lt = dict(_setting(kv, p) for kv in args.origin_lt)
    args.agent_config = _overrides(args.agent_config, p)
    args.origin_config = _overrides(args.origin_config, p)
    args.budget = args.budget or default_budget(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    modes = ["p2p", "baseline"] if args.mode == "both" else [args.mode]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(tempfile.mkdtemp(prefix="kraken-swarm-"))
    runs: list[RunResult] = []
    crashed = False
    try:
        blob = root / "blob"
        digest = make_blob(blob, int(args.size * MiB))
        print(f"blob {digest} ({args.size:g} MiB), work dir {root}", flush=True)
        for mode in modes:
            try:  # one run failing (a cluster that does not start) still reports the other
                runs.append(run_once(mode, root, blob, digest, args))
            except Exception as exc:  # noqa: BLE001
                print(f"[{mode}] run failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                crashed = True
    finally:
        if args.keep:
            print(f"work dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    summaries = {run.mode: summarize(run, args) for run in runs}
    gain = speedup(summaries)
    print_report(summaries, gain, args)

    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"swarm-{stamp}.json", args.out / f"swarm-{stamp}.png"
    params = {
        "agents": args.agents, "link": args.link, "warm": args.warm, "libtorrent_settings": args.lt,
        "origin_libtorrent_settings": args.origin_lt, "announce": args.announce, "agent_config": args.agent_config,
        "origin_config": args.origin_config, "rate_mib_s": args.rate,
        "rate_bytes_s": int(args.rate * MiB),
        "size_mib": args.size, "size_bytes": int(args.size * MiB), "digest": str(digest),
        "ideal_seconds": args.size / args.rate if args.rate > 0 else None, "modes": modes,
        "budget_seconds": args.budget, "percentiles": "nearest-rank", "timestamp": stamp,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    json_path.write_text(json.dumps({"params": params, "runs": summaries, "speedup": gain}, indent=2) + "\n")
    plot(runs, png_path, args)
    print(f"wrote {json_path} and {png_path}")
    return 0 if not crashed and all(s["failed"] == 0 for s in summaries.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
