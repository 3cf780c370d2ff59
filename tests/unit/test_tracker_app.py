"""The tracker app with an in-memory peer store and a fake origin cluster (unit tier; the
integration tests run it under gunicorn against real Redis and origins)."""

from types import SimpleNamespace
from urllib.parse import quote_from_bytes

import gevent
import pytest

from common import bencode
from common.digest import Digest
from common.errors import NotFound, Pending
from tracker.app import create_app
from tracker.config import TrackerConfig
from tracker.peerstore import MemoryPeerStore
from tracker.views.announce import decode_compact

IH = bytes(range(20))


class FakeCache:
    def __init__(self):
        self.data = {}

    def get(self, digest_hex):
        return self.data.get(digest_hex)

    def put(self, digest_hex, infohash_hex, info):
        self.data[digest_hex] = info


class FakeOrigins:
    def __init__(self, torrents, replicas=2):
        self.torrents = torrents
        self.calls = 0
        self.ring = SimpleNamespace(replicas=replicas)
        self.prefetched = []

    def prefetch(self, namespace, digest):
        self.prefetched.append(digest)

    def get_metainfo(self, namespace, digest):
        self.calls += 1
        value = self.torrents.get(digest)
        if isinstance(value, Exception):
            raise value
        if value is None:
            raise NotFound(f"{digest} not found")
        return value


@pytest.fixture
def make_client():
    def make(origins=None, **announce):
        from tracker.config import AnnounceConfig

        cfg = TrackerConfig(announce=AnnounceConfig(**announce))
        app = create_app(cfg, peer_store=MemoryPeerStore(ttl=60), metainfo_cache=FakeCache(),
                         origins=origins or FakeOrigins({}))
        return app.test_client()

    return make


def announce(client, peer_id, port, source="127.0.0.1", **params):
    q = f"info_hash={quote_from_bytes(IH)}&peer_id={quote_from_bytes(peer_id)}&port={port}"
    q += "".join(f"&{k}={v}" for k, v in params.items())
    return client.get(f"/announce?{q}", environ_base={"REMOTE_ADDR": source})


def test_announce_returns_compact_peers_without_the_requester(make_client):
    c = make_client()
    announce(c, b"a" * 20, 6001, source="127.0.0.11", left=0)
    resp = announce(c, b"b" * 20, 6002, source="127.0.0.12", left=100, compact=1)
    body = bencode.decode(resp.data)
    assert resp.status_code == 200 and body[b"interval"] == 15
    assert decode_compact(body[b"peers"]) == [("127.0.0.11", 6001)]
    assert body[b"complete"] == 1 and body[b"incomplete"] == 1


def test_announce_ip_parameter_and_non_compact_form(make_client):
    c = make_client()
    announce(c, b"a" * 20, 6001, source="127.0.0.1", ip="127.0.0.50")
    body = bencode.decode(announce(c, b"b" * 20, 6002, compact=0).data)
    assert body[b"peers"] == [{b"ip": b"127.0.0.50", b"port": 6001, b"peer id": b"a" * 20}]


def test_ipv6_peers_go_in_peers6(make_client):
    c = make_client()
    announce(c, b"a" * 20, 6001, source="::1")
    body = bencode.decode(announce(c, b"b" * 20, 6002).data)
    assert decode_compact(body[b"peers6"], v6=True) == [("::1", 6001)]


def test_a_big_swarm_is_handed_out_from_a_sample_of_the_pool_size(make_client):
    c = make_client(handout_pool=8)
    for n in range(1, 41):
        announce(c, bytes([n]) * 20, 6000 + n, source=f"127.0.0.{n}", left=0 if n == 3 else 100,
                 origin=1 if n == 3 else 0)
    handed = set()
    for _ in range(30):
        body = bencode.decode(announce(c, bytes([99]) * 20, 6099, source="127.0.0.99", numwant=5).data)
        peers = decode_compact(body[b"peers"])
        assert len(peers) == 5 and body[b"complete"] == 1 and body[b"incomplete"] == 40
        # The origin is always in the pool, and completed peers and origins come first in a tier.
        assert ("127.0.0.3", 6003) in peers
        handed.update(peers)
    assert len(handed) > 8  # a new sample each time, not a fixed subset of the swarm
    body = bencode.decode(announce(c, bytes([99]) * 20, 6099, source="127.0.0.99", numwant=20).data)
    assert len(decode_compact(body[b"peers"])) == 20  # a pool of at least numwant


def test_stopped_removes_peer_and_completed_counts(make_client):
    c = make_client()
    announce(c, b"a" * 20, 6001, left=0, event="completed")
    announce(c, b"a" * 20, 6001, event="stopped")
    scrape = c.get(f"/scrape?info_hash={quote_from_bytes(IH)}")
    files = bencode.decode(scrape.data)[b"files"]
    assert files[IH] == {b"complete": 0, b"incomplete": 0, b"downloaded": 1}


@pytest.mark.parametrize("query,reason", [
    ("peer_id=aaaaaaaaaaaaaaaaaaaa&port=1", b"missing info_hash"),
    ("info_hash=short&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1", b"info_hash must be 20 bytes"),
    (f"info_hash={quote_from_bytes(IH)}&peer_id=aaaaaaaaaaaaaaaaaaaa&port=99999", b"port out of range"),
    (f"info_hash={quote_from_bytes(IH)}&peer_id=aaaaaaaaaaaaaaaaaaaa&port=x", b"port must be an integer"),
])
def test_malformed_announce_gets_bencoded_failure(make_client, query, reason):
    resp = make_client().get(f"/announce?{query}")
    assert resp.status_code == 400
    assert bencode.decode(resp.data)[b"failure reason"] == reason


def test_metainfo_fetched_once_then_cached_with_our_announce_url(make_client, tmp_path):
    from torrents.metainfo import build

    (tmp_path / "b").write_bytes(b"blob" * 1000)
    d = Digest.of_file(tmp_path / "b")
    meta = build(tmp_path / "b", d)
    origins = FakeOrigins({d: meta.torrent()})
    c = make_client(origins)
    for _ in range(3):
        resp = c.get(f"/namespace/library%2Fbusybox/blobs/{d}/metainfo")
        assert resp.status_code == 200 and resp.mimetype == "application/x-bittorrent"
    assert origins.calls == 1
    top = bencode.decode(resp.data)
    assert top[b"announce"] == b"http://localhost/announce"
    assert bencode.encode(top[b"info"]) == meta.info


def test_metainfo_statuses(make_client):
    pending = Digest.of_bytes(b"pending")
    c = make_client(FakeOrigins({pending: Pending("fetching")}))
    assert c.get(f"/namespace/x/blobs/{Digest.of_bytes(b'nope')}/metainfo").status_code == 404
    assert c.get(f"/namespace/x/blobs/{pending}/metainfo").status_code == 202
    resp = c.get("/namespace/x/blobs/sha256:XYZ/metainfo")
    assert resp.status_code == 400 and "invalid digest" in resp.get_json()["error"]


def test_readiness_names_the_failing_dependency():
    class DeadStore(MemoryPeerStore):
        def ping(self):
            raise ConnectionError("connection refused")

    app = create_app(TrackerConfig(), peer_store=DeadStore(ttl=60), metainfo_cache=FakeCache(), origins=FakeOrigins({}))
    c = app.test_client()
    assert c.get("/health").status_code == 200
    resp = c.get("/readiness")
    assert resp.status_code == 503 and "redis" in resp.get_json()["error"]


def test_forwarded_client_address_is_used_only_behind_trusted_proxies():
    from common.sections import ServerConfig

    for trusted, expected in ((0, "10.0.0.1"), (1, "192.0.2.7")):
        cfg = TrackerConfig(server=ServerConfig(trusted_proxies=trusted))
        store = MemoryPeerStore(ttl=60)
        c = create_app(cfg, peer_store=store, metainfo_cache=FakeCache(), origins=FakeOrigins({})).test_client()
        q = f"info_hash={quote_from_bytes(IH)}&peer_id={'a' * 20}&port=7000"
        c.get(f"/announce?{q}", environ_base={"REMOTE_ADDR": "10.0.0.1"}, headers={"X-Forwarded-For": "192.0.2.7"})
        assert [p.ip for p in store.peers(IH)] == [expected]


def test_origin_can_warm_the_metainfo_cache_but_only_with_a_matching_torrent(make_client, tmp_path):
    from torrents.metainfo import build

    (tmp_path / "b").write_bytes(b"warm" * 1000)
    d = Digest.of_file(tmp_path / "b")
    origins = FakeOrigins({})
    c = make_client(origins)
    torrent = build(tmp_path / "b", d).torrent()
    other = Digest.of_bytes(b"other")
    assert c.put(f"/internal/namespace/x/blobs/{other}/metainfo", data=torrent).status_code == 400
    assert c.put(f"/internal/namespace/x/blobs/{d}/metainfo", data=b"garbage").status_code == 400
    assert c.put(f"/internal/namespace/x/blobs/{d}/metainfo", data=torrent).status_code == 204
    assert c.get(f"/namespace/x/blobs/{d}/metainfo").status_code == 200
    assert origins.calls == 0  # served from the warmed cache


def test_metainfo_names_the_seeding_origins_when_asked(make_client, tmp_path):
    from torrents.metainfo import build
    from tracker.client import SEEDS_HEADER, parse_seeds

    (tmp_path / "b").write_bytes(b"blob" * 1000)
    d = Digest.of_file(tmp_path / "b")
    meta = build(tmp_path / "b", d)
    c = make_client(FakeOrigins({d: meta.torrent()}))
    url = f"/namespace/ns/blobs/{d}/metainfo"
    assert c.get(url, query_string={"seeds": "1"}).headers[SEEDS_HEADER] == ""
    for n, (source, origin, left) in enumerate([("127.0.0.5", 1, 0), ("::1", 1, 0), ("127.0.0.6", 0, 0),
                                                ("127.0.0.7", 1, 10)]):
        q = (f"info_hash={quote_from_bytes(meta.infohash)}&peer_id={quote_from_bytes(bytes([n]) * 20)}"
             f"&port={6000 + n}&left={left}&origin={origin}")
        assert c.get(f"/announce?{q}", environ_base={"REMOTE_ADDR": source}).status_code == 200
    raw = c.get(url, query_string={"seeds": "1"}).headers[SEEDS_HEADER]
    # Origins with the whole blob only; an agent seeding it is found through announces.
    assert sorted(parse_seeds(raw)) == [("127.0.0.5", 6000), ("::1", 6001)] and "[::1]:6001" in raw
    assert SEEDS_HEADER not in c.get(url).headers


def test_a_cache_hit_nudges_the_origins_at_once_only_while_fewer_than_the_replicas_seed(make_client, tmp_path,
                                                                                         monkeypatch):
    from torrents.metainfo import build
    from tracker.views import metainfo as view

    monkeypatch.setattr(view, "NUDGE_DELAY", 0.3)
    (tmp_path / "b").write_bytes(b"nudge" * 1000)
    d = Digest.of_file(tmp_path / "b")
    meta = build(tmp_path / "b", d)
    origins = FakeOrigins({d: meta.torrent()}, replicas=2)
    c = make_client(origins)
    url = f"/namespace/ns/blobs/{d}/metainfo"

    def hit():
        """Nudges sent right after a metainfo GET, and once the delay is over."""
        view._nudged.clear()  # the nudge's own rate limit is not what this test is about
        before = origins.prefetched.count(d)
        # The delayed nudge is timed from the loop's clock, which is only as fresh as the
        # loop's last pass: stale by more than 0.25 s on a busy host, it fired within the
        # 0.05 s below.
        gevent.get_hub().loop.update_now()
        assert c.get(url, query_string={"seeds": "1"}).status_code == 200
        gevent.sleep(0.05)  # the nudge runs in a greenlet of its own
        at_once = origins.prefetched.count(d) - before
        gevent.sleep(0.4)
        return at_once, origins.prefetched.count(d) - before

    def seed(n, origin=1, left=0, event=None):
        q = (f"info_hash={quote_from_bytes(meta.infohash)}&peer_id={quote_from_bytes(bytes([n]) * 20)}"
             f"&port={6000 + n}&left={left}&origin={origin}" + (f"&event={event}" if event else ""))
        assert c.get(f"/announce?{q}", environ_base={"REMOTE_ADDR": f"127.0.0.{n}"}).status_code == 200

    assert hit() == (0, 0)  # a miss: the origin just handed over the metainfo
    assert hit() == (1, 1)  # a hit with no seed known
    seed(1)
    seed(2, origin=0)  # an agent seeding it does not count
    seed(3, left=10)  # nor does an origin still fetching it
    assert hit() == (1, 1)
    # As many seeding origins as replicas: they likely hold the blob, so the nudge waits
    # until the download that asked is under way (it still comes: a listed origin may have
    # restarted with an empty disk, and its entry outlives it until it expires).
    seed(4)
    assert hit() == (0, 1)
    seed(4, event="stopped")
    assert hit() == (1, 1)


def test_seeds_header_parsing_skips_what_does_not_parse():
    from tracker.client import parse_seeds

    assert parse_seeds("") == []
    assert parse_seeds("10.0.0.1:80, [fe80::1]:6881,junk,1.2.3.4:0,1.2.3.4:70000,:5") == [
        ("10.0.0.1", 80), ("fe80::1", 6881)]


def test_metainfo_hands_out_slots_only_when_asked(make_client, tmp_path):
    from torrents.metainfo import build
    from tracker.client import SLOT_HEADER

    (tmp_path / "b").write_bytes(b"blob" * 1000)
    d = Digest.of_file(tmp_path / "b")
    c = make_client(FakeOrigins({d: build(tmp_path / "b", d).torrent()}))
    url = f"/namespace/ns/blobs/{d}/metainfo"
    # Standard clients and warm-ups take no slot, and do not move the count.
    assert SLOT_HEADER not in c.get(url).headers
    assert [c.get(url, query_string={"slot": "1"}).headers[SLOT_HEADER] for _ in range(3)] == ["0", "1", "2"]
    assert SLOT_HEADER not in c.get(url).headers
