"""Gets blobs onto this host: metainfo from a tracker, pieces from the swarm, the whole
file checked against its sha256 before it joins the cache. Concurrent requests for one blob
share one download, and may stream it while it arrives.

Every byte served, whether cached or streamed, has been verified: a streamed piece is read
back from disk and checked against its SHA-1 in the metainfo, and the last piece of a blob
is released only once the sha256 of the whole blob has matched. A client therefore never
receives a complete blob with the wrong content; a failed download cuts its stream short.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import gevent
import gevent.event

from agent.config import DownloadConfig
from common.concurrency import in_thread
from common.digest import Digest
from common.errors import DownloadError, Pending
from common.store import CAStore
from torrents.metainfo import Metainfo
from torrents.seeder import EMPTY, Seeder
from torrents.session import TorrentSession
from tracker.client import TrackerClient

log = logging.getLogger(__name__)

# Pieces at the head of a blob asked for first when a client is waiting to stream it: the
# first bytes arrive fast while the rest keeps the swarm's rarest-first order.
HEAD_PIECES = 4
# A piece reported finished may still sit in libtorrent's write buffer; re-read it this many
# times (10 ms apart) before calling it unreadable.
READ_RETRIES = 500


class DiskFull(DownloadError):
    """The cache's disk cannot hold a blob (HTTP 507 on the server port)."""


def open_when_present(*paths: Path, timeout: float = 5.0):
    """Opens the first of `paths` that exists: a file libtorrent is about to create (its
    first piece may pass the hash check a moment before the write reaches the file system),
    or that has just moved from the download directory into the cache."""
    deadline = time.monotonic() + timeout
    while True:
        for path in paths:
            try:
                return open(path, "rb")
            except FileNotFoundError:
                pass
        if time.monotonic() > deadline:
            raise DownloadError(f"{paths[0].name} did not appear on disk")
        gevent.sleep(0.01)


def read_verified(f, meta: Metainfo, index: int) -> bytes:
    """Piece `index` from open file `f`, checked against the metainfo's SHA-1."""
    offset, length = meta.piece_span(index)
    for _ in range(READ_RETRIES):
        data = os.pread(f.fileno(), length, offset)
        if len(data) == length and meta.piece_ok(index, data):
            return data
        time.sleep(0.01)
    raise DownloadError(f"piece {index} on disk does not match its hash")


class Download:
    """One blob being fetched. `meta` resolves once the metainfo is known (or fails with
    NotFound), `verified` once the whole blob's sha256 has matched, `done` once the blob is
    in the cache; each fails with the download's error instead."""

    def __init__(self, namespace: str, digest: Digest, partial: Path):
        self.namespace = namespace
        self.digest = digest
        self.partial = partial
        self.meta = gevent.event.AsyncResult()
        self.verified = gevent.event.AsyncResult()
        self.done = gevent.event.AsyncResult()
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}  # phase -> monotonic time, for the log

    @property
    def infohash(self) -> str | None:
        return self.meta.value.infohash_hex if self.meta.successful() else None


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
        self._active: dict[Digest, Download] = {}
        self._metrics = metrics

    def get(self, namespace: str, digest: Digest) -> Path | Download:
        """The cached blob's path, or the (new or shared) download in progress."""
        if self.store.exists(digest):
            self.store.touch(digest)
            return self.store.path(digest)
        if digest == EMPTY:
            # A torrent cannot describe zero bytes, and nothing needs fetching.
            self.store.write_stream(digest, [])
            return self.store.path(digest)
        dl = self._active.get(digest)
        if dl is None:
            dl = Download(namespace, digest, self.store.download_dir / digest.hex)
            self._active[digest] = dl
            gevent.spawn(self._run, dl)
        return dl

    def ensure(self, namespace: str, digest: Digest) -> Path:
        """Blocks until the blob is verified in the cache; returns its path."""
        got = self.get(namespace, digest)
        return got if isinstance(got, Path) else got.done.get()

    def status(self, digest: Digest) -> dict:
        if self.store.exists(digest):
            size = self.store.size(digest)
            return {"state": "cached", "done": size, "total": size}
        dl = self._active.get(digest)
        if dl is None:
            return {"state": "absent", "done": 0, "total": None}
        if dl.infohash and self.session.has(dl.infohash):
            p = self.session.progress(dl.infohash)
            return {"state": "downloading", "done": p.done, "total": p.total, "peers": p.peers,
                    "download_rate": p.download_rate}
        return {"state": "pending", "done": 0, "total": None}

    def stream(self, dl: Download, start: int, end: int):
        """Yields bytes [start, end) of a download as verified pieces arrive."""
        meta: Metainfo = dl.meta.get()
        first, last = meta.piece_index(start), meta.piece_index(end - 1)
        infohash = meta.infohash_hex
        deadline = dl.started + self.cfg.timeout
        if not dl.done.ready():
            self.session.prioritize(infohash, range(first, min(first + HEAD_PIECES, last + 1)))
        f = None
        try:
            for index in range(first, last + 1):
                if index == meta.num_pieces - 1 or not self.session.has(infohash):
                    dl.verified.get()  # the whole blob's sha256 first (raises if it failed)
                else:
                    self.session.wait_piece(infohash, index, stall_timeout=self.cfg.stall_timeout,
                                            deadline=deadline)
                if f is None:
                    # The descriptor follows the file when it moves into the cache.
                    f = open_when_present(dl.partial, self.store.path(dl.digest))
                data = in_thread(read_verified, f, meta, index)
                offset = index * meta.piece_length
                yield data[max(start - offset, 0) : end - offset]
        finally:
            if f is not None:
                f.close()

    def _metainfo(self, namespace: str, digest: Digest) -> Metainfo:
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

    def _run(self, dl: Download) -> None:
        digest = dl.digest
        try:
            try:
                meta = self._metainfo(dl.namespace, digest)
                self._check_space(dl, meta)
            except BaseException as exc:
                dl.meta.set_exception(exc)
                raise
            dl.meta.set(meta)
            dl.marks["metainfo"] = time.monotonic()
            dl.done.set(self._fetch(dl, meta))
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            log.warning("download of %s failed: %s", digest, exc)
            if not dl.verified.ready():
                dl.verified.set_exception(exc)
            dl.done.set_exception(exc)
        finally:
            self._active.pop(digest, None)

    def _check_space(self, dl: Download, meta: Metainfo) -> None:
        """Refuses a download the cache's disk cannot hold, counting what the downloads in
        progress still need, before a byte is written or a response header sent: otherwise
        libtorrent fails with ENOSPC half way and a client streaming the blob only sees its
        body cut short."""
        free = self.store.free_bytes()
        needed = sum(_still_needed(other) for other in self._active.values() if other is not dl)
        if meta.length + needed > free:
            raise DiskFull(
                f"agent disk is full: blob {dl.digest} needs {meta.length} bytes, {free} bytes are free "
                f"in the cache ({needed} of them promised to downloads in progress)"
            )

    def _fetch(self, dl: Download, meta: Metainfo) -> Path:
        infohash = meta.infohash_hex
        deadline = dl.started + self.cfg.timeout
        ok = False
        f = None
        try:
            self.session.start(meta, self.store.download_dir)
            # Hash the blob in order while it arrives, so little is left to do at the end.
            h = hashlib.sha256()
            index = 0
            while index < meta.num_pieces:
                self.session.wait_piece(infohash, index, stall_timeout=self.cfg.stall_timeout, deadline=deadline)
                if f is None:
                    dl.marks["first piece"] = time.monotonic()
                    f = open_when_present(dl.partial)
                # Everything that has arrived contiguously from here is hashed in one go.
                end = index + 1
                while end < meta.num_pieces and self.session.has_piece(infohash, end):
                    end += 1
                in_thread(_hash_pieces, f, meta, range(index, end), h)
                index = end
            actual = Digest(h.hexdigest())
            if actual != dl.digest:
                # Every piece matched its SHA-1, so the metainfo itself must be wrong.
                raise DownloadError(f"downloaded content is {actual}, not {dl.digest}: bad metainfo?")
            # Streams may release their last piece now; publishing is this host's business.
            dl.verified.set(True)
            dl.marks["verified"] = time.monotonic()
            in_thread(os.fsync, f.fileno())
            self.seeder.remember(dl.digest, meta)
            # A rename into the cache; libtorrent keeps seeding from the new place.
            self.session.move(infohash, self.store.blob_dir(dl.digest))
            ok = True
        finally:
            if f is not None:
                f.close()
            if not ok:
                self.session.remove(infohash)
                dl.partial.unlink(missing_ok=True)
        elapsed = time.monotonic() - dl.started
        if self._metrics:
            self._metrics.observe(elapsed)
        phases = ", ".join(f"{k} {(v - dl.started) * 1e3:.1f}" for k, v in dl.marks.items())
        log.info("downloaded %s (%d bytes) in %.3fs (ms: %s)", dl.digest, meta.length, elapsed, phases)
        return self.store.path(dl.digest)


def _still_needed(dl: Download) -> int:
    """Bytes a download in progress has yet to write (its file is sparse until then)."""
    if not dl.meta.successful() or dl.verified.ready():
        return 0
    try:
        allocated = dl.partial.stat().st_blocks * 512
    except FileNotFoundError:
        allocated = 0
    return max(0, dl.meta.value.length - allocated)


def _hash_pieces(f, meta: Metainfo, pieces: range, h) -> None:
    for index in pieces:
        h.update(read_verified(f, meta, index))
