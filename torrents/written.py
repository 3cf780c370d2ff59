"""Which of a download's pieces are in its file.

libtorrent reports a piece once its SHA-1 has passed, while its blocks may still wait in
the disk threads' write queue (reading such a piece back failed its check). A flush
(`torrent_handle.flush_cache`) is a fence in that queue: its alert comes once every job
queued before it has run. So a reported piece counts as written once a flush asked for
after it is confirmed.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Flushing after every 256 KiB piece cost more CPU than it saved; batching them by 8 MiB,
# or by what came within 20 ms, cut the agent's CPU per 50 MiB blob from 0.21-0.24 s
# (reading each piece back to check its SHA-1) to 0.165-0.195 s (2 MiB: 0.185 s; 32 MiB:
# 0.195 s and slower downloads).
FLUSH_BATCH_BYTES = 8 << 20
FLUSH_DELAY = 0.02
# A flush whose alert has not come after this long is asked for again (its alert is not
# waited for any more: each alert completes the oldest flush still open, so a lost one
# only delays what counts as written, never advances it early).
FLUSH_RETRY = 2.0


class WrittenPieces:
    """The pieces of one torrent in the order they passed (`arrived`); the first `written`
    of them are in the file. `flush` asks libtorrent for a flush; `confirmed` is called on
    each of its alerts."""

    def __init__(self, piece_length: int, flush: Callable[[], None]):
        self.arrived: list[int] = []
        self.written = 0
        self._flush = flush
        self._open: collections.deque[int] = collections.deque()  # len(arrived) per open flush
        self._asked_at = 0.0  # when the last flush was asked for
        self._waiting_since = 0.0  # when the oldest piece no flush covers yet arrived
        self._batch = max(1, FLUSH_BATCH_BYTES // piece_length)

    def all_written(self, pieces: list[int]) -> None:
        """A torrent added complete: every piece is in the file already."""
        self.arrived = list(pieces)
        self.written = len(pieces)

    def add(self, pieces: list[int], finished: bool = False) -> None:
        """Pieces that have passed; a batch's worth waiting (or, once `finished`, any) is
        flushed."""
        if pieces and len(self.arrived) == (self._open[-1] if self._open else self.written):
            self._waiting_since = time.monotonic()
        self.arrived.extend(pieces)
        self._ask(force=finished)

    def confirmed(self, finished: bool) -> bool:
        """A flush alert: completes the oldest open flush. Also libtorrent's own flush when
        a torrent finishes, which comes after every piece's writes were queued, so it covers
        any flush still open. Returns whether it changed `written`."""
        if not self._open:
            return False
        self.written = max(self.written, self._open.popleft())
        self._waiting_since = time.monotonic()
        self._ask(force=finished)
        return True

    def due(self, name: str) -> float:
        """For a waiter: asks again for an overdue flush, flushes pieces that have waited
        FLUSH_DELAY for a batch; returns how long to wait before calling again."""
        now = time.monotonic()
        if self._open and now - self._asked_at > FLUSH_RETRY:
            log.warning("%s: no alert for a flush after %.0f s; asking again", name, FLUSH_RETRY)
            self._ask(force=True, again=True)
        if len(self.arrived) > self.written:
            left = FLUSH_DELAY - (now - self._waiting_since)
            if left > 0:
                return left
            self._ask(force=True)
        return 0.5

    def _ask(self, force: bool = False, again: bool = False) -> None:
        """Asks for a flush once enough pieces wait (or `force`), unless one is open
        (`again`: even so, for one whose alert is overdue)."""
        if self._open and not again:
            return
        if again or len(self.arrived) - self.written >= (1 if force else self._batch):
            self._open.append(len(self.arrived))
            self._asked_at = time.monotonic()
            self._flush()
