"""Seeds the blobs of a content-addressed store: each blob's metainfo is built once, kept
beside it as a sidecar, and its torrent added without re-hashing the file up front. Used by
origins (every blob) and agents (their cache)."""

from __future__ import annotations

import logging

import gevent

from common.concurrency import SingleFlight, in_thread
from common.digest import Digest
from common.errors import KrakenError, NotFound
from common.store import CAStore
from torrents import metainfo as mi
from torrents.session import TorrentSession

log = logging.getLogger(__name__)

EMPTY = Digest.of_bytes(b"")
SIDECAR = "torrent"


class Seeder:
    def __init__(self, store: CAStore, session: TorrentSession):
        self.store = store
        self.session = session
        self._flight = SingleFlight()

    def metainfo(self, digest: Digest) -> mi.Metainfo:
        """The blob's metainfo (built on first use), and the blob seeded."""
        if not self.store.exists(digest):
            raise NotFound(f"blob {digest} not found")
        meta, built = self._flight.do(digest, lambda: self._load_or_build(digest))
        # A metainfo built just now hashed every piece of the file: no need to again.
        self.session.seed(meta, self.store.blob_dir(digest), checked=built)
        return meta

    def _load_or_build(self, digest: Digest) -> tuple[mi.Metainfo, bool]:
        """The blob's metainfo, and whether it was built (from the file) just now."""
        cached = self.store.get_meta(digest, SIDECAR)
        if cached is not None:
            return mi.Metainfo(cached), False
        meta = in_thread(mi.build, self.store.path(digest), digest)
        self.store.set_meta(digest, SIDECAR, meta.info)
        return meta, True

    def remember(self, digest: Digest, meta: mi.Metainfo) -> None:
        """Records the metainfo of a blob that arrived by torrent (it is already seeding)."""
        self.store.set_meta(digest, SIDECAR, meta.info)

    def seed_all(self) -> int:
        """Seeds everything in the store, yielding between blobs."""
        n = 0
        for digest in self.store.list():
            if digest == EMPTY:
                continue
            try:
                self.metainfo(digest)
                n += 1
            except (KrakenError, OSError) as exc:
                log.warning("cannot seed %s: %s", digest, exc)
            gevent.sleep(0)
        log.info("seeding %d blobs from disk", n)
        return n

    def drop(self, digest: Digest) -> bool:
        """Stops seeding and deletes the blob."""
        cached = self.store.get_meta(digest, SIDECAR)
        if cached is not None:
            self.session.remove(mi.Metainfo(cached).infohash_hex)
        # Unlinking a large file frees its extents through the journal: off the event loop.
        return in_thread(self.store.delete, digest)
