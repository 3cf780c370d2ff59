"""What an origin does with the blobs it holds: keep them, seed them, copy them to the
other replicas of their ring position."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import gevent
import gevent.queue

from common.concurrency import in_thread
from common.digest import Digest
from common.errors import Conflict, DigestMismatch, KrakenError, NotFound
from common.ring import HashRing
from common.store import CAStore
from origin.client import OriginClient
from origin.config import ReplicationConfig
from torrents import metainfo as mi
from torrents.seeder import EMPTY, Seeder
from torrents.session import TorrentSession

log = logging.getLogger(__name__)


class BlobManager:
    def __init__(
        self,
        store: CAStore,
        session: TorrentSession,
        ring: HashRing,
        self_addr: str,
        replication: ReplicationConfig,
        metrics=None,
        trackers=None,
        backing=None,
    ):
        self.store = store
        self.session = session
        self.ring = ring
        self.self_addr = self_addr
        self.replication = replication
        self.seeder = Seeder(store, session)
        self._replicas: gevent.queue.Queue = gevent.queue.Queue()
        self._metrics = metrics
        self._trackers = trackers  # a TrackerClient, to warm metainfo caches at commit
        self._greenlets: list[gevent.Greenlet] = []
        # The storage backend (origin.backing.Backing): write-back and refresh.
        self.backing = backing
        if backing is not None:
            backing.on_refreshed = lambda ns, d: self._after_store(ns, d, replicate=True)

    def start(self) -> None:
        self._greenlets = [gevent.spawn(self.seeder.seed_all), gevent.spawn(self._replicate_loop)]
        if self.backing is not None:
            self._greenlets += self.backing.start()

    def stop(self) -> None:
        gevent.killall(self._greenlets, block=False)

    def has(self, digest: Digest) -> bool:
        return self.store.exists(digest)

    def ensure(self, namespace: str, digest: Digest, wait: float = 0.0) -> None:
        """Makes sure the blob is on local disk, fetching it from the namespace's storage
        backend if need be. Raises NotFound, Unavailable, or Pending (still fetching after
        `wait` seconds)."""
        if self.store.exists(digest):
            return
        if self.backing is None:
            raise NotFound(f"blob {digest} not found")
        self.backing.refresh(namespace, digest, wait)

    def metainfo(self, digest: Digest, namespace: str | None = None, wait: float = 0.0) -> mi.Metainfo:
        """The blob's metainfo; also makes sure the blob is being seeded, since whoever asks
        for metainfo is about to join the swarm. With a namespace, a blob held only by the
        storage backend is fetched first (Pending meanwhile)."""
        if namespace is not None:
            self.ensure(namespace, digest, wait)
        meta = self.seeder.metainfo(digest)
        if namespace is not None:
            # Asked from outside means someone is about to join the swarm (a tracker missed
            # its cache, or nudges us): make sure the trackers know this seed now.
            self.session.reannounce(meta.infohash_hex)
        return meta

    def commit(self, namespace: str, digest: Digest, src: Path) -> None:
        """Verifies and stores a finished upload, seeds it, queues its replication. Raises
        DigestMismatch (the upload is deleted, nothing is stored)."""
        if self.store.exists(digest):
            os.unlink(src)
            raise Conflict(f"blob {digest} already exists")
        actual = in_thread(Digest.of_file, src)
        if actual != digest:
            os.unlink(src)
            raise DigestMismatch(digest, actual)
        self.store.commit_file(src, digest, verified=True)
        self._after_store(namespace, digest, replicate=True)

    def receive(self, namespace: str, digest: Digest, chunks: Iterable[bytes]) -> None:
        """Stores a copy pushed by a fellow replica (verified as it is written)."""
        if self.store.exists(digest):
            raise Conflict(f"blob {digest} already exists")
        self.store.write_stream(digest, chunks)
        self._after_store(namespace, digest, replicate=False)

    def _after_store(self, namespace: str, digest: Digest, *, replicate: bool) -> None:
        # Every replica queues the write-back (it is skipped when the backend has the blob
        # already), so the blob reaches the backend even if the origin that took the upload
        # dies before its turn came.
        if self.backing is not None:
            self.backing.written(namespace, digest)
        if digest != EMPTY:
            meta = self.metainfo(digest)
            if replicate and self._trackers is not None:
                gevent.spawn(self._trackers.put_metainfo, namespace, digest, meta.torrent())
        if replicate:
            for addr in self.ring.locations(digest):
                if addr != self.self_addr:
                    self._replicas.put((namespace, digest, addr, 0))

    def _replicate_loop(self) -> None:
        while True:
            namespace, digest, addr, attempt = self._replicas.get()
            gevent.spawn(self._replicate_one, namespace, digest, addr, attempt)

    def _replicate_one(self, namespace: str, digest: Digest, addr: str, attempt: int) -> None:
        try:
            OriginClient(addr).replicate(namespace, digest, self.store.path(digest))
            log.info("replicated %s to %s", digest, addr)
            if self._metrics:
                self._metrics.labels("ok").inc()
        except (KrakenError, OSError) as exc:
            if self._metrics:
                self._metrics.labels("error").inc()
            if attempt + 1 >= self.replication.attempts:
                log.error("giving up replicating %s to %s: %s", digest, addr, exc)
                return
            delay = min(self.replication.max_backoff, self.replication.backoff * 2**attempt)
            log.warning("replicating %s to %s failed (%s); retry in %.1fs", digest, addr, exc, delay)
            gevent.sleep(delay)
            self._replicas.put((namespace, digest, addr, attempt + 1))
