"""The queue that lets only a few of a host's large downloads run at once
(`download.max_active`): Docker extracts an image's layers one by one, so the first layer
arriving whole early lets extraction overlap the rest of the download (agent.config)."""

from __future__ import annotations

import itertools
import time

from common.concurrency import Signal


class Admission:
    """Lets at most `limit` large downloads run at once, in the order they were asked for.

    A download takes a ticket when it is created and states its size once the metainfo is
    known. The lowest waiting ticket goes first; a download still fetching its metainfo
    keeps its place for up to `hold` seconds, so one whose metainfo came back a few
    milliseconds sooner does not jump ahead of it."""

    def __init__(self, limit: int, hold: float = 0.5):
        self.limit = limit
        self.hold = hold
        self._tickets = itertools.count()
        self._undecided: dict[int, float] = {}  # ticket -> when taken, size not yet known
        self._waiting: set[int] = set()
        self.active = 0
        self._changed = Signal()

    def ticket(self) -> int:
        t = next(self._tickets)
        self._undecided[t] = time.monotonic()
        return t

    def enter(self, ticket: int, large: bool) -> bool:
        """Blocks until the download may start; True when it holds one of the `limit`
        places, to give back with `leave`."""
        self._undecided.pop(ticket, None)
        if not large or self.limit <= 0:
            self._changed.notify()
            return False
        self._waiting.add(ticket)
        try:
            while True:
                now = time.monotonic()
                held = [t0 + self.hold - now for t, t0 in self._undecided.items()
                        if t < ticket and t0 + self.hold > now]
                if self.active < self.limit and ticket == min(self._waiting) and not held:
                    break
                self._changed.wait(timeout=min(held, default=1.0))
        finally:
            self._waiting.discard(ticket)
        self.active += 1
        self._changed.notify()
        return True

    def forget(self, ticket: int) -> None:
        """The download ended before `enter` (no metainfo)."""
        if self._undecided.pop(ticket, None) is not None:
            self._changed.notify()

    def leave(self) -> None:
        self.active -= 1
        self._changed.notify()
