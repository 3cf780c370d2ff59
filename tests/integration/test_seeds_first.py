"""A download dials the seeds it was named without waiting for its first announce's reply:
the agent gets the blob's seeding origins with its metainfo (tracker.client SEEDS_HEADER), so
it reaches them even while the tracker's announce is slow or failing. Here every announce is
held unanswered, so only that direct dial can deliver."""

from __future__ import annotations

import threading
import time

import gevent
import pytest

from common.devcluster import free_port
from tests.integration.helpers import tracker_in_thread
from tests.integration.test_session import make_blob
from torrents.config import TorrentConfig
from torrents.session import TorrentSession
from tracker.peerstore import MemoryPeerStore


class HeldAnnounces(MemoryPeerStore):
    """Each announce is recorded and then held (no reply) until `release` is set."""

    def __init__(self):
        super().__init__(ttl=60)
        self.release = threading.Event()

    def earlier_peers(self, infohash, me, limit):
        self.release.wait(30)
        return super().earlier_peers(infohash, me, limit)


@pytest.fixture
def held():
    store = HeldAnnounces()
    with tracker_in_thread(store) as url:
        yield store, url
        store.release.set()  # lets the server's threads finish


def test_a_download_dials_its_seeds_before_any_announce_is_answered(held, tmp_path):
    store, url = held
    seed_port = free_port("127.0.0.41")
    seeder = TorrentSession(TorrentConfig(listen_ip="127.0.0.41", port=seed_port), trackers=[url])
    # libtorrent also dials known peers on its tick; a 20 s tick leaves only the dial as the
    # torrent is added (TorrentSession._add, no_verify_files), which comes at once.
    named = TorrentSession(TorrentConfig(listen_ip="127.0.0.42", settings={"tick_interval": 20_000}), trackers=[url])
    unnamed = TorrentSession(TorrentConfig(listen_ip="127.0.0.43"), trackers=[url])
    try:
        _, meta = make_blob(tmp_path / "seed", 1 << 20)
        ih = meta.infohash_hex
        seeder.seed(meta, tmp_path / "seed")
        unnamed.start(meta, tmp_path / "unnamed")
        named.start(meta, tmp_path / "named", peers=[("127.0.0.41", seed_port)])
        named.wait_finished(ih, stall_timeout=10, deadline=time.monotonic() + 15)
        # No announce has been answered, and the download without seeds, started first, has
        # no peer to get a byte from. (How many announces reached the tracker by now is not
        # asserted: on a busy host libtorrent may not have sent them yet, and either way
        # none was answered.)
        assert not store.release.is_set()
        assert unnamed.progress(ih).done == 0
        # Once the tracker answers, it finds the seeds too.
        store.release.set()
        unnamed.wait_finished(ih, stall_timeout=10, deadline=time.monotonic() + 20)
        assert (tmp_path / "unnamed" / meta.name).read_bytes() == (tmp_path / "seed" / meta.name).read_bytes()
        assert (tmp_path / "named" / meta.name).read_bytes() == (tmp_path / "seed" / meta.name).read_bytes()
    finally:
        store.release.set()
        for s in (seeder, named, unnamed):
            s.stop()
        gevent.sleep(0)
