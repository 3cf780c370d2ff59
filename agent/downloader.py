"""Gets blobs onto this host: metainfo from a tracker, pieces from the swarm, then the whole
file checked against its sha256 before it becomes visible in the cache. Concurrent requests
for one blob share one download."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import gevent

from common.concurrency import SingleFlight, in_thread
from common.digest import Digest
from common.errors import DownloadError, Pending
from common.store import CAStore
from torrents.seeder import EMPTY, Seeder
from torrents.session import TorrentSession
from tracker.client import TrackerClient

from agent.config import DownloadConfig

log = logging.getLogger(__name__)


def _verify_and_sync(path: Path) -> Digest:
    digest = Digest.of_file(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return digest


class Downloader:
    def __init__(
        self,
        store: CAStore,
        session: TorrentSession,
        seeder: Seeder,
        tracker: TrackerClient,
        cfg: DownloadConfig,
        metrics=None,
    ):
        self.store = store
        self.session = session
        self.seeder = seeder
        self.tracker = tracker
        self.cfg = cfg
        self._flight = SingleFlight()
        self._infohash: dict[Digest, str] = {}
        self._metrics = metrics

    def ensure(self, namespace: str, digest: Digest) -> Path:
        """Returns the path of the verified blob, downloading it first if needed."""
        if self.store.exists(digest):
            self.store.touch(digest)
            return self.store.path(digest)
        self._flight.do(digest, lambda: self._download(namespace, digest))
        return self.store.path(digest)

    def status(self, digest: Digest) -> dict:
        if self.store.exists(digest):
            size = self.store.size(digest)
            return {"state": "cached", "done": size, "total": size}
        infohash = self._infohash.get(digest)
        if infohash and self.session.has(infohash):
            p = self.session.progress(infohash)
            return {"state": "downloading", "done": p.done, "total": p.total, "peers": p.peers,
                    "download_rate": p.download_rate}
        state = "pending" if self._flight.pending(digest) else "absent"
        return {"state": state, "done": 0, "total": None}

    def _metainfo(self, namespace: str, digest: Digest):
        deadline = time.monotonic() + self.cfg.pending_timeout
        delay = 0.2
        while True:
            try:
                return self.tracker.get_metainfo(namespace, digest)
            except Pending:
                if time.monotonic() > deadline:
                    raise DownloadError(f"blob {digest} still pending at the origins after "
                                        f"{self.cfg.pending_timeout:.0f}s") from None
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _download(self, namespace: str, digest: Digest) -> None:
        if self.store.exists(digest):
            return
        t0 = time.monotonic()
        if digest == EMPTY:
            # A torrent cannot describe zero bytes, and nothing needs fetching.
            self.store.write_stream(digest, [])
            return
        meta = self._metainfo(namespace, digest)
        infohash = meta.infohash_hex
        self._infohash[digest] = infohash
        partial = self.store.download_dir / digest.hex
        ok = False
        try:
            self.session.download(meta, self.store.download_dir,
                                  timeout=self.cfg.timeout, stall_timeout=self.cfg.stall_timeout)
            # libtorrent checked every piece's SHA-1; the sha256 of the whole is what the
            # blob's name promises, so check that too before anyone is served.
            actual = in_thread(_verify_and_sync, partial)
            if actual != digest:
                # Every piece passed its SHA-1, so the metainfo itself must be wrong.
                raise DownloadError(f"downloaded content is {actual}, not {digest}: bad metainfo?")
            self.seeder.remember(digest, meta)
            # A rename into the cache; libtorrent keeps seeding from the new place.
            self.session.move(infohash, self.store.blob_dir(digest))
            ok = True
        finally:
            self._infohash.pop(digest, None)
            if not ok:
                self.session.remove(infohash)
                partial.unlink(missing_ok=True)
        elapsed = time.monotonic() - t0
        if self._metrics:
            self._metrics.observe(elapsed)
        log.info("downloaded %s (%d bytes) in %.2fs", digest, meta.length, elapsed)
