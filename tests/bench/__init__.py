"""Benchmarks, run by the Makefile's bench-* targets (not by the test suite)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable

from common.procstat import stat_fields

MiB = 1 << 20


def exit_on_sigterm() -> None:
    """Turns SIGTERM (from `timeout`, or a job being stopped) into SystemExit, so the
    benchmark's finally blocks still stop its cluster and remove its work directory: killed
    runs used to leave theirs in /tmp (5.6 GiB for a 20-agent run) until the disk filled."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def host_cpu_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU of this host since boot, from /proc/stat: the
    share of busy ticks between two readings tells whether the cores were saturated."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is counted in user)
    total = sum(fields[:8])
    return total - fields[3] - fields[4], total


def group_cpu_seconds(pgids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of the live processes in each process group of `pgids` (a
    cluster process and its children: gunicorn's master and workers), from one pass over
    /proc; 0 for a group with no live process."""
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(pgids, 0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (fields := stat_fields(entry)) is None:  # None: gone meanwhile
            continue
        if (pgrp := int(fields[2])) in totals:
            totals[pgrp] += int(fields[11]) + int(fields[12])
    return {g: t / tick for g, t in totals.items()}
