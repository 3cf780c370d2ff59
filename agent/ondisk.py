"""Checks a download's file as its pieces arrive: each piece read back from disk, made sure
to be there as libtorrent verified it, and the sha256 of the whole blob hashed along the
checked prefix (agent.downloader publishes that prefix to streams)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gevent

from common.concurrency import in_thread
from common.digest import Digest
from common.errors import DownloadError
from torrents.metainfo import Metainfo

if TYPE_CHECKING:
    from agent.downloader import Download

log = logging.getLogger(__name__)

# Bytes of pieces read back and checked per hand-off to a thread; streams waiting on the
# check move on after each batch.
CHECK_BATCH_BYTES = 8 << 20
# A piece reported finished may still sit in libtorrent's write buffer; keep reading it
# back (about every 10 ms) for this many seconds before calling it unreadable.
READ_TIMEOUT = 5.0
# What a page of a fresh file that libtorrent has not written yet (or is writing) reads as,
# in part at least (read_piece).
UNWRITTEN = bytes(64)
# Bytes hashed per read when the sha256 catches up with the checked prefix.
HASH_CHUNK = 4 << 20
# Blobs up to this size are read back and hashed on the event loop (0.1-0.3 ms a 256 KiB
# piece, a few ms for the whole blob at most): the hand-offs to the thread pool and back
# cost more than a piece (about 0.4 ms each way on a busy host), on the path of a cold
# fetch that waits on every piece. Larger blobs keep the loop free and hash beside it.
INLINE_BLOB_BYTES = 4 << 20


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


def run_for(meta: Metainfo, fn, *args):
    """fn(*args) -- a read of the file of blob `meta`, or its hashing -- on the event loop
    for a blob up to INLINE_BLOB_BYTES, else in the thread pool."""
    return fn(*args) if meta.length <= INLINE_BLOB_BYTES else in_thread(fn, *args)


def read_piece(f, meta: Metainfo, index: int, landed_only: bool = False) -> bytes | None:
    """Piece `index` from open file `f` if it is on disk as libtorrent verified it, else None.

    By default the piece must match the metainfo's SHA-1. With `landed_only` -- the file was
    created by this download and the piece passed libtorrent's own SHA-1 check the first
    time, so the only bytes written there are the verified ones -- it is enough that the
    write has landed: the read has no run of zero bytes, which is what a page not written
    yet reads as (and the tail of one being written). Data with such a run (real data may
    have one) is checked against the SHA-1 all the same. This saves one SHA-1 pass over
    each blob, about a tenth of an agent's CPU in a cold docker pull. The sha256 of the
    whole blob still covers every byte (and `OnDiskCheck.result` checks each piece again
    should it not match)."""
    offset, length = meta.piece_span(index)
    data = os.pread(f.fileno(), length, offset)
    if len(data) != length:
        return None
    if landed_only and UNWRITTEN not in data:
        return data
    return data if meta.piece_ok(index, data) else None


class OnDiskCheck:
    """Checks a download's file while it arrives, so little is left to do at the end: each
    piece is read back from disk as soon as libtorrent reports it, in whatever order pieces
    come (libtorrent checked what it received; this checks what reached the file, see
    `read_piece`), and the checked prefix goes into the sha256 of the whole. The prefix is
    published as `Download.checked`, which streams serve without hashing it again.

    `landed_only(i)` tells whether piece `i` may be taken as libtorrent verified it once its
    write has landed (read_piece); otherwise its SHA-1 is checked."""

    def __init__(self, dl: Download, meta: Metainfo, landed_only: Callable[[int], bool] = lambda i: False):
        self.dl = dl
        self.meta = meta
        self.landed_only = landed_only
        self.took_landed = False  # some piece was taken without its SHA-1 (result)
        self.ondisk = bytearray(meta.num_pieces)  # pieces whose bytes on disk have passed
        self.misses: dict[int, float] = {}  # piece -> when its read-back first did not match
        self.sha256 = hashlib.sha256()
        self.hashed = 0  # leading pieces fed to the sha256
        self.batch = max(1, CHECK_BATCH_BYTES // meta.piece_length)

    @property
    def done(self) -> bool:
        return self.hashed == self.meta.num_pieces

    def advance(self, f, new: list[int]) -> None:
        """Checks the pieces libtorrent reported since the last call (`new`) and those that
        did not read back right before, in batches; raises DownloadError for one that has
        not read back right for READ_TIMEOUT. A piece that passes right where the sha256
        has got to goes into it from the same read; the others are read again once the
        verified prefix reaches them."""
        meta, dl, n = self.meta, self.dl, self.meta.num_pieces
        todo = [*self.misses, *new]
        for start in range(0, len(todo), self.batch):
            chunk = todo[start:start + self.batch]
            landed = {i for i in chunk if self.landed_only(i)}
            self.took_landed = self.took_landed or bool(landed)
            passed, self.hashed = run_for(meta, _check_pieces, f, meta, chunk, landed, self.ondisk, self.hashed,
                                          self.sha256)
            for i in passed:
                self.misses.pop(i, None)
            now = time.monotonic()
            for i in set(chunk).difference(passed):
                if now - self.misses.setdefault(i, now) > READ_TIMEOUT:
                    raise DownloadError(f"piece {i} on disk does not match its hash")
            end = dl.checked
            while end < n and self.ondisk[end]:
                end += 1
            if end > dl.checked:
                dl.set_checked(end)
        if dl.checked > self.hashed:
            in_thread(_hash_span, f, self.hashed * meta.piece_length,
                      min(dl.checked * meta.piece_length, meta.length), self.sha256)
            self.hashed = dl.checked

    def result(self, f) -> Digest:
        """The sha256 of the whole file, once `done`. Should it not be the download's digest
        after pieces were taken without their SHA-1, a read may have raced a write after
        all: every piece is checked against its SHA-1 and the file hashed again."""
        actual = Digest(self.sha256.hexdigest())
        if actual != self.dl.digest and self.took_landed:
            log.warning("%s: sha256 mismatch with pieces checked for landing only; checking every piece",
                        self.dl.digest)
            actual = in_thread(_recheck, f, self.meta)
        return actual


def _check_pieces(f, meta: Metainfo, pieces: list[int], landed: set[int], ondisk: bytearray, hashed: int,
                  h) -> tuple[list[int], int]:
    """Reads `pieces` from file `f` and marks in `ondisk` those that pass `read_piece` now
    (the `landed` ones with `landed_only`); feeds hash `h` (which has the first `hashed`
    pieces) every piece that continues it, from the same read. Returns the pieces that
    passed and the pieces in `h`."""
    passed = []
    for index in pieces:
        data = read_piece(f, meta, index, landed_only=index in landed)
        if data is None:
            continue
        passed.append(index)
        ondisk[index] = 1
        if index == hashed:
            h.update(data)
            hashed += 1
    return passed, hashed


def _recheck(f, meta: Metainfo) -> Digest:
    """The sha256 of file `f` after checking every piece against its SHA-1 (DownloadError
    for one that does not match)."""
    h = hashlib.sha256()
    for index in range(meta.num_pieces):
        data = read_piece(f, meta, index)
        if data is None:
            raise DownloadError(f"piece {index} on disk does not match its hash")
        h.update(data)
    return Digest(h.hexdigest())


def _hash_span(f, start: int, end: int, h) -> None:
    """Feeds bytes [start, end) of file `f` to hash `h`."""
    pos = start
    while pos < end:
        data = os.pread(f.fileno(), min(end - pos, HASH_CHUNK), pos)
        if not data:
            raise DownloadError(f"file is short on disk at byte {pos}")
        h.update(data)
        pos += len(data)
