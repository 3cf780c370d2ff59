"""torrents.TorrentSession on its own: two sessions in this process and the tracker app
served by Werkzeug in a thread (with an in-memory peer store). No gunicorn needed; the
greenlets run on gevent's hub in this thread."""

from __future__ import annotations

import os
import threading
import time

import gevent
import pytest
from werkzeug.serving import make_server

from common.digest import Digest
from common.errors import DownloadError
from torrents import metainfo as mi
from torrents.config import TorrentConfig
from torrents.session import TorrentSession
from tracker.app import create_app
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore


class _NoOrigins:
    def get_metainfo(self, namespace, digest):
        raise AssertionError("not used")


@pytest.fixture
def tracker_url():
    app = create_app(TrackerConfig(), peer_store=MemoryPeerStore(ttl=60), metainfo_cache=None, origins=_NoOrigins())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/announce"
    server.shutdown()


def make_blob(directory, size):
    data = os.urandom(size)
    d = Digest.of_bytes(data)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / d.hex).write_bytes(data)
    return d, mi.build(directory / d.hex, d)


def test_capped_download_reports_progress_and_is_not_a_stall(tracker_url, tmp_path):
    # The seeder is capped at 2 MiB/s, so 6 MiB take ~3 s: longer than the 1.5 s stall
    # timeout, which must only fire when no bytes arrive.
    cap = 2 << 20
    seeder = TorrentSession(TorrentConfig(listen_ip="127.0.0.31", upload_rate_limit=cap), trackers=[tracker_url])
    leecher = TorrentSession(TorrentConfig(listen_ip="127.0.0.32"), trackers=[tracker_url])
    try:
        digest, meta = make_blob(tmp_path / "seed", 6 << 20)
        seeder.seed(meta, tmp_path / "seed")
        seen = []

        def watch():
            while True:
                gevent.sleep(0.2)
                if leecher.has(meta.infohash_hex):
                    seen.append(leecher.progress(meta.infohash_hex).done)

        watcher = gevent.spawn(watch)
        t0 = time.monotonic()
        leecher.download(meta, tmp_path / "dl", timeout=60, stall_timeout=1.5)
        elapsed = time.monotonic() - t0
        watcher.kill()
        assert Digest.of_file(tmp_path / "dl" / digest.hex) == digest
        assert elapsed > 2.0, "the upload cap did not apply to a loopback peer"
        assert any(0 < done < meta.length for done in seen), f"no partial progress seen: {seen[:20]}"
        # Session counters refresh every progress_interval.
        deadline = time.monotonic() + 3
        while seeder.counters["sent_payload_bytes"] < meta.length and time.monotonic() < deadline:
            gevent.sleep(0.1)
        assert seeder.counters["sent_payload_bytes"] >= meta.length
    finally:
        seeder.stop()
        leecher.stop()


def test_download_with_no_source_fails_after_the_stall_timeout(tracker_url, tmp_path):
    leecher = TorrentSession(TorrentConfig(listen_ip="127.0.0.33"), trackers=[tracker_url])
    try:
        _, meta = make_blob(tmp_path / "nowhere", 1 << 20)
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match="no progress"):
            leecher.download(meta, tmp_path / "dl", timeout=30, stall_timeout=1.0)
        assert time.monotonic() - t0 < 10
    finally:
        leecher.stop()
