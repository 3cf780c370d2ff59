"""The state a TorrentSession keeps per torrent (torrents.session)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gevent.event

from common.concurrency import Signal
from torrents.metainfo import Metainfo


@dataclass(frozen=True)
class Progress:
    done: int = 0
    total: int = 0
    state: str = "starting"
    peers: int = 0
    seeds: int = 0
    download_rate: int = 0
    upload_rate: int = 0
    uploaded: int = 0
    downloaded: int = 0


class Torrent:
    """What a TorrentSession knows of one torrent, kept current from libtorrent's alerts."""

    def __init__(self, meta: Metainfo):
        self.handle = None  # libtorrent's, once it has the torrent (TorrentSession._add)
        self.meta = meta
        self.added = gevent.event.Event()  # set once the handle is, or the add failed
        self.finished = gevent.event.Event()
        self.moved = gevent.event.Event()
        self.flushed = gevent.event.Event()
        self.error: str | None = None
        self.add_error: str | None = None
        self.move_error: str | None = None
        self.progress = Progress(total=meta.length)
        self.last_progress_at = time.monotonic()
        self.have = bytearray(meta.num_pieces)
        self.arrived: list[int] = []  # the pieces in `have`, in the order they passed
        self.changed = Signal()
        self.reannounced_at = 0.0
        self.urgent: set[int] = set()  # pieces given a deadline (prioritize)
        # Pieces that failed libtorrent's hash check at least once: blocks of the bad copy
        # may be in the file until the good copy's write lands over them. All of them, for
        # all we know, once alerts were dropped.
        self.hash_failed: set[int] = set()
        self.alerts_lost = False

    def notify(self) -> None:
        self.changed.notify()
