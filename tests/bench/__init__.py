"""Benchmarks, run by the Makefile's bench-* targets (not by the test suite)."""

from __future__ import annotations

import signal
import sys


def exit_on_sigterm() -> None:
    """Turns SIGTERM (from `timeout`, or a job being stopped) into SystemExit, so the
    benchmark's finally blocks still stop its cluster and remove its work directory: killed
    runs used to leave theirs in /tmp (5.6 GiB for a 20-agent run) until the disk filled."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
