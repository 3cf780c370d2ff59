import random

from tracker import handout
from tracker.peerstore import PeerInfo


def p(n, **kw):
    return PeerInfo(peer_id=bytes([n]) * 20, ip=f"10.0.0.{n}", port=7000, **kw)


ME = PeerInfo(peer_id=b"\xff" * 20, ip="10.0.0.255", port=7000, region="r1", zone="z1", rack="k1")


def test_locality_tiers_then_completed_origins_incomplete():
    peers = [
        p(1, region="r2"),                                  # other region, incomplete
        p(2, region="r1", zone="z2", complete=True),        # same region
        p(3, region="r1", zone="z1", rack="k2"),            # same zone, incomplete
        p(4, region="r1", zone="z1", rack="k1"),            # same rack, incomplete
        p(5, region="r1", zone="z1", rack="k1", complete=True),  # same rack, complete
        p(6, origin=True, complete=True),                   # origin, no locality
        p(7, complete=True),                                # complete, no locality
        p(8, region="r1", zone="z1", rack="k2", origin=True, complete=True),  # origin in my zone
    ]
    ordered = [x.ip[-1] for x in handout.order(peers, ME, 50, rng=random.Random(1))]
    assert ordered == ["5", "4", "8", "3", "2", "7", "6", "1"]


def test_requester_excluded_and_numwant_respected():
    peers = [p(i, complete=True) for i in range(1, 20)] + [ME]
    out = handout.order(peers, ME, 5)
    assert len(out) == 5 and ME not in out


def test_shuffle_within_equal_rank_spreads_load():
    peers = [p(i, complete=True) for i in range(1, 11)]
    firsts = {handout.order(peers, ME, 1, rng=random.Random(seed))[0].ip for seed in range(50)}
    assert len(firsts) > 5


def test_origins_only_hands_out_only_origins():
    peers = [p(1, complete=True), p(2, origin=True, complete=True), p(3)]
    assert [x.ip for x in handout.order(peers, ME, 50, origins_only=True)] == ["10.0.0.2"]


def test_a_peer_gets_only_the_peers_that_joined_before_it():
    # Of any two peers only the later one is handed the other, so only it dials: were
    # both to dial at once, libtorrent would drop both connections (tracker.handout).
    first, second, third = (p(n, joined=j) for n, j in ((1, 1), (2, 2), (3, 3)))
    swarm = [first, second, third, p(9, origin=True, complete=True, joined=4)]
    assert handout.order(swarm, first, 50) == []
    assert handout.order(swarm, second, 50) == [first]
    assert {x.ip for x in handout.order(swarm, third, 50)} == {first.ip, second.ip}
    # Equal numbers (peers recorded before numbering existed): the greater peer id dials.
    a, b = p(5), p(6)
    assert handout.order([a, b], a, 50) == [] and handout.order([a, b], b, 50) == [a]
