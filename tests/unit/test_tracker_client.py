"""tracker.client.TrackerClient against the tracker app served over HTTP in a thread (an
in-memory peer store and a fake origin cluster): fail-over, statuses, slot and seeds."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from common.devcluster import free_port
from common.digest import Digest
from common.errors import NotFound, Pending, Unavailable
from tests.unit.test_tracker_app import FakeCache, FakeOrigins
from torrents.metainfo import build
from tracker.app import create_app
from tracker.client import TrackerClient
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore, PeerInfo


@pytest.fixture
def served(tmp_path):
    (tmp_path / "b").write_bytes(b"blob" * 1000)
    d = Digest.of_file(tmp_path / "b")
    meta = build(tmp_path / "b", d)
    store = MemoryPeerStore(ttl=60)
    pending = Digest.of_bytes(b"pending")
    origins = FakeOrigins({d: meta.torrent(), pending: Pending("fetching")})
    app = create_app(TrackerConfig(), peer_store=store, metainfo_cache=FakeCache(), origins=origins)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", store, d, meta, pending
    finally:
        server.shutdown()


def test_metainfo_with_slot_and_seeds_and_fail_over(served):
    addr, store, d, meta, _ = served
    store.update(meta.infohash, PeerInfo(peer_id=b"o" * 20, ip="127.0.0.9", port=7001, complete=True, origin=True))
    dead = f"127.0.0.1:{free_port()}"
    client = TrackerClient([dead, addr], timeout=(1, 5))
    got = client.metainfo_for_download("ns", d)
    assert got.meta.infohash == meta.infohash and got.slot == 0 and got.seeds == [("127.0.0.9", 7001)]
    assert client.metainfo_for_download("ns", d).slot == 1
    # The dead tracker is now asked last; a plain fetch takes no slot.
    assert client._ordered() == [addr, dead]
    assert client.get_metainfo("ns", d).infohash == meta.infohash
    assert client.metainfo_for_download("ns", d, slot=False).slot is None
    client.ping()
    assert client.put_metainfo("ns", d, meta.torrent()) == 1


def test_metainfo_statuses_become_errors(served):
    addr, _, _, _, pending = served
    client = TrackerClient([addr], timeout=(1, 5))
    with pytest.raises(NotFound):
        client.get_metainfo("ns", Digest.of_bytes(b"nowhere"))
    with pytest.raises(Pending):
        client.get_metainfo("ns", pending)
    with pytest.raises(Unavailable):
        TrackerClient([f"127.0.0.1:{free_port()}"], timeout=(1, 5)).get_metainfo("ns", pending)
    with pytest.raises(Unavailable):
        TrackerClient([f"127.0.0.1:{free_port()}"]).ping()
