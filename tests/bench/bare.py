"""Stock libtorrent baseline for the swarm benchmark: one seeder and N leechers, each a bare
`libtorrent.session` in its own process on its own 127.0.0.x address, a minimal in-process
HTTP tracker handing every peer all the others, every host capped at R by libtorrent's
limiter. None of kraken's code is on the path except the metainfo builder, so the figure is
what libtorrent itself reaches on this machine with the settings kraken uses.

    .venv/bin/python -m tests.bench.bare [--agents 20] [--size 256] [--rate 8] [--seeder-queue 2000]
                                         [--unchoke-slots 8] [--tick-ms 50]
                                         [--link limiter|netns]

`--link netns` puts the seeder and each leecher in a network namespace of its own behind a
veth link shaped by `tc tbf` to R both ways (tests/bench/netns.py, as `make bench-swarm
--link netns` does; libtorrent's limiter is then off), with the tracker in the hub.

Prints the same columns as `make bench-swarm` (fraction of the per-host maximum at p50 and
for the slowest leecher, seeder upload in blob copies).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

from tests.bench import MiB, exit_on_sigterm, netns


# The tracker: every announce returns all other peers of the torrent, compact.
def serve_tracker(host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    from common import bencode

    peers: dict[bytes, dict[bytes, tuple[str, int]]] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            q = {}
            for part in urlsplit(self.path).query.split("&"):
                key, _, value = part.partition("=")
                q.setdefault(unquote_to_bytes(key), []).append(unquote_to_bytes(value))
            infohash, peer_id = q[b"info_hash"][0], q[b"peer_id"][0]
            ip = q.get(b"ip", [self.client_address[0].encode()])[0].decode()
            port = int(q[b"port"][0])
            with lock:
                swarm = peers.setdefault(infohash, {})
                swarm[peer_id] = (ip, port)
                others = [addr for pid, addr in swarm.items() if pid != peer_id]
            compact = b"".join(bytes(map(int, h.split("."))) + p.to_bytes(2, "big") for h, p in others)
            body = bencode.encode({"interval": 15, "min interval": 15, "peers": compact})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/announce"


# One peer process.
def run_peer(args) -> None:
    import libtorrent as lt

    rate = int(args.rate * MiB)
    ses = lt.session({
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "listen_interfaces": f"{args.ip}:0", "outgoing_interfaces": args.ip, "announce_ip": args.ip,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True, "min_announce_interval": 15,
        "upload_rate_limit": rate, "download_rate_limit": rate,
        # The tuned settings of LIBTORRENT-NOTES (kraken uses the same).
        "tick_interval": args.tick_ms, "whole_pieces_threshold": 0, "request_queue_time": 1,
        "max_allowed_in_request_queue": args.queue,
        "unchoke_slots_limit": args.unchoke_slots,
    })
    everyone = lt.ip_filter()
    everyone.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(everyone)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(Path(args.torrent).read_bytes()))
    params.save_path = args.save
    params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
    if args.seed:
        params.flags |= lt.torrent_flags.seed_mode
    handle = ses.add_torrent(params)
    done_reported = args.seed
    while True:
        st = handle.status()
        if not done_reported and st.is_seeding:
            print(json.dumps({"done": time.time() - args.t0}), flush=True)
            done_reported = True
        if os.path.exists(args.stop):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"uploaded": st.total_payload_upload, "cpu": usage.ru_utime + usage.ru_stime}),
                  flush=True)
            return
        time.sleep(0.02)


def last_report(proc: subprocess.Popen) -> dict:
    """A peer's report at the stop ({"uploaded", "cpu"}), past a "done" line not read yet."""
    for line in proc.stdout:
        report = json.loads(line)
        if "uploaded" in report:
            return report
    return {"uploaded": 0, "cpu": 0.0}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--size", type=float, default=256, help="MiB")
    p.add_argument("--rate", type=float, default=8, help="MiB/s per host, up and down; 0 = unlimited")
    p.add_argument("--seeder-queue", type=int, default=2000,
                   help="the seeder's max_allowed_in_request_queue (kraken's origins use 8)")
    p.add_argument("--unchoke-slots", type=int, default=8,
                   help="every peer's unchoke_slots_limit (libtorrent's default 8; kraken's hosts use -1, all)")
    p.add_argument("--tick-ms", type=int, default=50,
                   help="every peer's tick_interval (kraken: 10 while fresh, then torrent.tick_ms, 50)")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--link", choices=["limiter", "netns"], default="limiter",
                   help="cap hosts with libtorrent's limiter, or put each in a namespace behind a tc-shaped link")
    # Internal: one peer.
    p.add_argument("--role", choices=["main", "peer"], default="main", help=argparse.SUPPRESS)
    p.add_argument("--ip", help=argparse.SUPPRESS)
    p.add_argument("--torrent", help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--seed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--queue", type=int, default=2000, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stop", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "peer":
        return run_peer(args)
    exit_on_sigterm()

    from common.digest import Digest
    from torrents import metainfo as mi

    size = int(args.size * MiB)
    ideal = size / (args.rate * MiB) if args.rate else 0.0
    with tempfile.TemporaryDirectory(prefix="bare-") as tmp:
        root = Path(tmp)
        seed_dir = root / "seed"
        seed_dir.mkdir()
        blob = seed_dir / "blob"
        with open(blob, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
        meta = mi.build(blob, Digest.of_file(blob), size)
        os.rename(blob, seed_dir / meta.name)
        # Where each host runs: (command prefix, address); the seeder is host 0.
        hosts = [([], "127.0.0.2")] + [([], f"127.0.0.{20 + i}") for i in range(args.agents)]
        peer_rate = args.rate
        if args.link == "netns" and not args.rate:
            raise SystemExit("--link netns needs a --rate to shape the links to")
        # With netns the tracker's socket lives in the hub.
        with netns.shaped(int(args.rate * MiB)) if args.link == "netns" else contextlib.nullcontext() as network:
            if network:
                hosts = [(network.exec_prefix(ns), network.hosts[ns])
                         for ns in [network.add_host("seed", 0)]
                         + [network.add_host(f"leech{i}", 50 + i) for i in range(args.agents)]]
                peer_rate = 0  # the links are the cap
            tracker, announce = serve_tracker(netns.HUB_IP if network else "127.0.0.1")
            torrent = root / "blob.torrent"
            torrent.write_bytes(meta.torrent(announce=announce))
            stop = root / "stop"
            me = [sys.executable, "-m", "tests.bench.bare", "--role", "peer", "--torrent", str(torrent),
                  "--rate", str(peer_rate), "--stop", str(stop), "--unchoke-slots", str(args.unchoke_slots),
                  "--tick-ms", str(args.tick_ms)]
            (prefix, ip), leecher_hosts = hosts[0], hosts[1:]
            seeder = subprocess.Popen([*prefix, *me, "--ip", ip, "--save", str(seed_dir), "--seed",
                                       "--queue", str(args.seeder_queue)], stdout=subprocess.PIPE, text=True)
            time.sleep(1.5)
            t0 = time.time()
            leechers = []
            for i, (prefix, ip) in enumerate(leecher_hosts):
                save = root / f"leech-{i}"
                save.mkdir()
                leechers.append(subprocess.Popen([*prefix, *me, "--ip", ip, "--save", str(save), "--t0", str(t0)],
                                                 stdout=subprocess.PIPE, text=True))
            times = []
            deadline = time.monotonic() + args.timeout
            for proc in leechers:
                line = proc.stdout.readline()
                if not line or time.monotonic() > deadline:
                    break
                times.append(json.loads(line)["done"])
            stop.touch()
            # Each peer's last line: its upload and the CPU seconds it used in all (a
            # leecher's from its start, a few hundred ms before the timed run).
            ends = [last_report(proc) for proc in [seeder, *leechers]]
            uploaded, seeder_cpu = ends[0]["uploaded"], ends[0]["cpu"]
            leecher_cpu = statistics.median(e["cpu"] for e in ends[1:])
            # As bench-swarm's CPU floor: every peer's CPU seconds over the cores (here over
            # each peer's whole life, so a little more than the run's own).
            floor = sum(e["cpu"] for e in ends) / (os.cpu_count() or 1)
            for proc in [seeder, *leechers]:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            tracker.shutdown()
    times.sort()
    if len(times) < args.agents:
        print(f"only {len(times)} of {args.agents} leechers finished")
    if not times:
        return
    p50 = times[(len(times) + 1) // 2 - 1]
    if not args.rate:
        # Unlimited: what the swarm delivered in total, as bench-swarm reports it.
        print(f"stock libtorrent, {args.agents} leechers, {args.size:g} MiB, unlimited: p50 {p50:.2f} s, slowest "
              f"{times[-1]:.2f} s, aggregate {len(times) * size / MiB / times[-1]:.1f} MiB/s, seeder upload "
              f"{uploaded / size:.2f} x S; CPU-s leecher p50 {leecher_cpu:.1f}, seeder {seeder_cpu:.1f}, "
              f"CPU floor {floor:.1f} s")
        return
    link = "tc-shaped links" if args.link == "netns" else "libtorrent limiter"
    print(f"stock libtorrent, {args.agents} leechers, {args.size:g} MiB, {args.rate:g} MiB/s per host ({link}), "
          f"seeder queue {args.seeder_queue}, unchoke slots {args.unchoke_slots}: "
          f"p50 {p50:.2f} s (frac {ideal / p50:.3f}), slowest {times[-1]:.2f} s "
          f"(frac {ideal / times[-1]:.3f}), seeder upload {uploaded / size:.2f} x S; "
          f"CPU-s leecher p50 {leecher_cpu:.1f}, seeder {seeder_cpu:.1f}, CPU floor {floor:.1f} s")


if __name__ == "__main__":
    main()
