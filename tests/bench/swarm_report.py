"""The swarm benchmark's results: per-agent and per-run records, their summary (percentiles,
fractions of the per-host maximum, blob copies, CPU), the printed table and the CDF plot."""

from __future__ import annotations

import argparse
import math
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench import MiB

FRACTIONS = ("p50", "p99", "min", "mean")


@dataclass
class AgentResult:
    agent: str
    seconds: float | None = None  # last byte received and sha256 verified, from the common start
    first_byte: float | None = None  # response headers: the agent had the blob verified on disk
    error: str | None = "not finished before the deadline"
    sent_bytes: int | None = None  # torrent payload this agent uploaded to other agents
    recv_bytes: int | None = None  # torrent payload it received (more than S: duplicates)
    cpu_seconds: float | None = None  # the agent's processes' CPU time during the fetch


@dataclass
class RunResult:
    mode: str
    agents: list[AgentResult]
    origin_sent_bytes: int
    wall_seconds: float
    origin_cpu_seconds: float | None = None
    clients_cpu_seconds: float | None = None  # this process: the clients reading and hashing
    host_cpu_busy: float | None = None  # share of every core's time busy (anything) during the fetch

    @property
    def times(self) -> list[float]:
        return sorted(a.seconds for a in self.agents if a.seconds is not None)


def nearest_rank(sorted_values: list[float], pct: float) -> float:
    """The smallest observed value with at least pct % of the values at or below it."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(run: RunResult, args: argparse.Namespace) -> dict:
    t = run.times
    out: dict = {
        "mode": run.mode,
        "completed": len(t),
        "failed": args.agents - len(t),
        "wall_seconds": run.wall_seconds,
        "origin_sent_bytes": run.origin_sent_bytes,
        "origin_upload_copies": run.origin_sent_bytes / (args.size * MiB),
        # What agents uploaded to each other, in blob copies; and everything received over
        # what N copies need (duplicate pieces).
        "agents_upload_copies": sum(a.sent_bytes or 0 for a in run.agents) / (args.size * MiB),
        "recv_overhead": sum(a.recv_bytes or 0 for a in run.agents) / (args.agents * args.size * MiB) - 1,
        # CPU seconds during the fetch (all hosts share this machine's cores).
        "origin_cpu_seconds": run.origin_cpu_seconds,
        "clients_cpu_seconds": run.clients_cpu_seconds,
        "host_cpu_busy": run.host_cpu_busy,
        "agent_cpu_seconds_p50": statistics.median(cpu) if (cpu := [a.cpu_seconds for a in run.agents
                                                                     if a.cpu_seconds is not None]) else None,
        # The least wall time in which this machine's cores could have done all the work the
        # fetch took (every agent, the origin, the clients). Near the fetch's own time the
        # run was bound by CPU, whatever the protocol did: N=20, S=256 MiB, limiter, in a
        # slow hour, 82 CPU-s on 2 cores is 41 s of a 43.5 s run.
        "cpu_floor_seconds": (sum(cpu) + (run.origin_cpu_seconds or 0) + (run.clients_cpu_seconds or 0))
                             / (os.cpu_count() or 1) if cpu else None,
    }
    if t:
        out["seconds"] = {"min": t[0], "p50": nearest_rank(t, 50), "mean": statistics.fmean(t),
                          "p99": nearest_rank(t, 99), "max": t[-1]}
        if args.rate > 0:
            # Per agent: (S/R) / its time. min is the slowest agent's, mean is over agents.
            ideal = args.size / args.rate
            per_agent = [ideal / x for x in t]
            out["fraction_of_per_host_max"] = {
                "p50": ideal / out["seconds"]["p50"], "p99": ideal / out["seconds"]["p99"],
                "min": min(per_agent), "mean": statistics.fmean(per_agent),
            }
        else:
            out["aggregate_mib_s"] = len(t) * args.size / t[-1]
    out["per_agent"] = [asdict(a) for a in run.agents]
    return out


def speedup(summaries: dict[str, dict]) -> dict | None:
    """Baseline time / P2P time for the median and the slowest agent."""
    p2p, base = summaries.get("p2p", {}).get("seconds"), summaries.get("baseline", {}).get("seconds")
    if not p2p or not base:
        return None
    return {"p50": base["p50"] / p2p["p50"], "slowest": base["max"] / p2p["max"]}


def table(summaries: dict[str, dict], args: argparse.Namespace) -> str:
    """The runs side by side: times in seconds, fractions of the per-host max (aggregate
    throughput when unlimited), then who uploaded how many blob copies."""
    keys = ["min", "p50", "mean", "p99", "max"]
    rows = [["", "done"] + [f"{k} s" for k in keys]
            + ([f"frac {k}" for k in FRACTIONS] if args.rate > 0 else ["aggr MiB/s"])
            + ["origin up/S", "agents up/S", "dup recv", "CPU-s agent p50", "CPU-s origin", "CPU-s clients",
               "CPU floor s", "host CPU busy"]]
    for mode, s in summaries.items():
        row = [mode, f"{s['completed']}/{args.agents}"]
        sec = s.get("seconds")
        row += [f"{sec[k]:.2f}" if sec else "-" for k in keys]
        if args.rate > 0:
            frac = s.get("fraction_of_per_host_max")
            row += [f"{frac[k]:.3f}" if frac else "-" for k in FRACTIONS]
        else:
            row += [f"{s['aggregate_mib_s']:.1f}" if "aggregate_mib_s" in s else "-"]
        row += [f"{s['origin_upload_copies']:.2f}", f"{s['agents_upload_copies']:.2f}",
                f"{s['recv_overhead'] * 100:.0f}%"]
        cpu_keys = ("agent_cpu_seconds_p50", "origin_cpu_seconds", "clients_cpu_seconds", "cpu_floor_seconds")
        row += [f"{s[k]:.1f}" if s.get(k) is not None else "-" for k in cpu_keys]
        row += [f"{s['host_cpu_busy'] * 100:.0f}%" if s.get("host_cpu_busy") is not None else "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def plot(runs: list[RunResult], path: Path, args: argparse.Namespace) -> None:
    """Completion-time CDF per run. Failed agents never reach the curve, so it stops short
    of 1. Log x when the runs differ by much, or the P2P curve would be a vertical bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, ax = plt.subplots(figsize=(8, 5))
    for run in runs:
        t = run.times
        if t:
            ys = [(i + 1) / args.agents for i in range(len(t))]
            ax.step([t[0]] + t, [0.0] + ys, where="post", linewidth=2,
                    label=f"{run.mode}: p50 {nearest_rank(t, 50):.1f} s, slowest {t[-1]:.1f} s")
    all_t = [x for run in runs for x in run.times]
    if args.rate > 0:
        ideal = args.size / args.rate
        ax.axvline(ideal, linestyle="--", color="grey", label=f"per-host ideal S/R = {ideal:.1f} s")
        all_t.append(ideal)
    log_x = bool(all_t) and max(all_t) / min(all_t) > 8
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("seconds since all requests started" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("fraction of agents done")
    ax.set_title(f"kraken-p2p swarm: {args.agents} agents, {args.size:g} MiB blob, {rate_label(args)} per host")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def rate_label(args: argparse.Namespace) -> str:
    if args.rate <= 0:
        return "unlimited rate"
    return f"{args.rate:g} MiB/s ({'tc-shaped links' if args.link == 'netns' else 'libtorrent limiter'})"


def print_report(summaries: dict[str, dict], gain: dict | None, args: argparse.Namespace) -> None:
    """The runs' table with what its columns mean, and the P2P speed-up when both ran."""
    print()
    print(f"{args.agents} agents, {args.size:g} MiB blob, {rate_label(args)} per host up and down"
          + (f"; per-host ideal S/R = {args.size / args.rate:.2f} s" if args.rate > 0 else ""))
    print("frac = (S/R) / time (min, mean: over agents); percentiles are nearest-rank"
          " (p99 = slowest agent for N < 100)")
    print("origin up/S, agents up/S = payload uploaded by the origin, by all agents, in blob copies;"
          " dup recv = received beyond N copies")
    print("CPU-s = CPU seconds used during the fetch by a host's processes (the median agent; the origin)"
          " and by all clients together (reading and hashing the body, in this process); CPU floor = all"
          f" of those CPU seconds (every agent's) over the {os.cpu_count()} cores, the least time the work"
          " could take (near the times: bound by CPU); host CPU busy = the share of the cores' time spent"
          " on anything during the fetch (near 100 %: saturated)")
    print(table(summaries, args))
    if gain:
        print(f"speed-up of P2P over origin-only: p50 {gain['p50']:.2f}x, slowest {gain['slowest']:.2f}x")
