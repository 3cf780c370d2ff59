"""/proc/<pid>/stat, for the dev cluster, tests and benchmarks that watch processes they started."""

from __future__ import annotations


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command: state [0], ppid [1], pgrp [2], ...,
    utime [11], stime [12] (clock ticks). None once the process is gone. The command is
    skipped up to its last ')', so a name with spaces or parentheses shifts nothing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
