"""Evicts cached blobs by idle time and by capacity (least recently used first). Access
time is the blob file's mtime, which the agent bumps on every serve."""

from __future__ import annotations

import logging
import time

import gevent

from common.concurrency import in_thread
from common.digest import Digest
from common.store import CAStore
from torrents.seeder import Seeder

log = logging.getLogger(__name__)


class Evictor:
    def __init__(self, store: CAStore, seeder: Seeder, capacity_bytes: int, idle_ttl: float, clock=time.time):
        self.store = store
        self.seeder = seeder
        self.capacity = capacity_bytes
        self.idle_ttl = idle_ttl
        self.clock = clock

    def sweep(self) -> list[str]:
        """Evicts what is idle too long, then the least recently used until the cache fits.
        Returns the evicted digests."""
        entries = in_thread(self._entries)  # a stat per blob: off the event loop
        total = sum(size for _, size, _ in entries)
        cutoff = self.clock() - self.idle_ttl
        evicted = []
        for atime, size, digest in entries:
            if atime >= cutoff and total <= self.capacity:
                break
            if self.seeder.drop(digest):
                evicted.append(str(digest))
                total -= size
        if evicted:
            log.info("evicted %d blobs; cache holds %d bytes", len(evicted), total)
        return evicted

    def _entries(self) -> list[tuple[float, int, Digest]]:
        """(last access, size, digest) of every cached blob, oldest first."""
        entries = []
        for digest in self.store.list():
            try:
                entries.append((self.store.last_access(digest), self.store.size(digest), digest))
            except Exception:  # noqa: BLE001 - deleted meanwhile
                continue
        return sorted(entries)

    def run(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - keep sweeping next time
                log.exception("cache sweep failed")
