"""One contract, run against every PeerStore: the in-memory fake and real Redis."""

import pytest

from tracker.peerstore import MemoryPeerStore, PeerInfo, RedisPeerStore

IH = b"\x01" * 20


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "redis"])
def store_and_clock(request):
    clock = Clock()
    if request.param == "memory":
        return MemoryPeerStore(ttl=30, clock=clock), clock
    r = request.getfixturevalue("redis_client")
    return RedisPeerStore(r, ttl=30, clock=clock), clock


def peer(n, **kw):
    return PeerInfo(peer_id=bytes([n]) * 20, ip=f"127.0.0.{n}", port=6000 + n, **kw)


def test_update_then_list(store_and_clock):
    store, _ = store_and_clock
    store.update(IH, peer(1))
    store.update(IH, peer(2, complete=True, zone="z"))
    assert sorted(p.ip for p in store.peers(IH)) == ["127.0.0.1", "127.0.0.2"]
    assert [p for p in store.peers(IH) if p.complete][0].zone == "z"
    assert store.peers(b"\x02" * 20) == []


def test_reannounce_replaces_state(store_and_clock):
    store, _ = store_and_clock
    store.update(IH, peer(1))
    store.update(IH, peer(1, complete=True))
    (p,) = store.peers(IH)
    assert p.complete


def test_stale_peers_expire(store_and_clock):
    store, clock = store_and_clock
    store.update(IH, peer(1))
    clock.now += 20
    store.update(IH, peer(2))
    clock.now += 15
    assert [p.ip for p in store.peers(IH)] == ["127.0.0.2"]


def test_remove_and_counts(store_and_clock):
    store, _ = store_and_clock
    store.update(IH, peer(1, complete=True))
    store.update(IH, peer(2))
    store.mark_completed(IH)
    c = store.counts(IH)
    assert (c.complete, c.incomplete, c.downloaded) == (1, 1, 1)
    store.remove(IH, peer(2).peer_id)
    assert store.counts(IH).incomplete == 0


def test_peers_are_numbered_in_the_order_they_joined(store_and_clock):
    store, clock = store_and_clock
    assert [store.update(IH, peer(n)) for n in (3, 1, 2)] == [1, 2, 3]
    assert store.update(IH, peer(1, complete=True)) == 2  # a re-announce keeps its place
    assert store.update(b"\x02" * 20, peer(1)) == 1  # per torrent
    assert sorted((p.joined, p.ip) for p in store.peers(IH)) == [(1, "127.0.0.3"), (2, "127.0.0.1"), (3, "127.0.0.2")]
    # A peer that left, or went stale, joins again at the end.
    store.remove(IH, peer(3).peer_id)
    assert store.update(IH, peer(3)) == 4
    clock.now += 20
    store.update(IH, peer(1))
    clock.now += 15
    assert [p.ip for p in store.peers(IH)] == ["127.0.0.1"]
    assert store.update(IH, peer(2)) == 5
    assert sorted((p.joined, p.ip) for p in store.peers(IH)) == [(2, "127.0.0.1"), (5, "127.0.0.2")]


def test_redis_join_numbers_expire_with_the_swarm(redis_client):
    store = RedisPeerStore(redis_client, ttl=30)
    store.update(IH, peer(1))
    assert 0 < redis_client.ttl(f"kraken:joins:{IH.hex()}") <= 31
    assert redis_client.ttl(f"kraken:peers:{IH.hex()}") == redis_client.ttl(f"kraken:joins:{IH.hex()}")


def test_slots_count_up_per_torrent_and_restart_after_idle(store_and_clock):
    store, clock = store_and_clock
    assert [store.next_slot(IH) for _ in range(3)] == [0, 1, 2]
    assert store.next_slot(b"\x02" * 20) == 0
    assert store.next_slot(IH) == 3
    if isinstance(store, MemoryPeerStore):  # Redis expires the key on its own clock
        clock.now += 3601
        assert store.next_slot(IH) == 0


def test_redis_slot_counter_expires(redis_client):
    store = RedisPeerStore(redis_client, ttl=30)
    store.next_slot(IH)
    assert 0 < redis_client.ttl(f"kraken:slot:{IH.hex()}") <= 3600
