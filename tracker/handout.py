"""Which peers an announcing client gets, best first (API.md): same rack, same zone, same
region, then the rest; within a tier completed peers, then origins, then incomplete peers;
shuffled among equals so that load spreads.

A client gets only the peers that joined the swarm before it (PeerInfo.joined, peer ids
breaking ties), so of any two peers only the later one dials the other. When both dial,
as when two agents start a blob at the same instant and each first announce reads the
swarm after both have written themselves in, libtorrent drops both connections: each side
closes the incoming one as a duplicate of the tracker's entry for the same listen address
(peer_list::update_peer_port), and neither dials again for min_reconnect_time, 60 s.
Measured: two agents fetching a fresh blob at once never connected in 7 of 120 tries (0 of
60 with this rule). The earlier peer needs no handout: the later one's connection reaches
it."""

from __future__ import annotations

import random

from tracker.peerstore import PeerInfo


def _tier(peer: PeerInfo, me: PeerInfo) -> int:
    same_region = bool(me.region) and peer.region == me.region
    same_zone = bool(me.zone) and peer.zone == me.zone and (not me.region or same_region)
    if same_zone and me.rack and peer.rack == me.rack:
        return 0
    if same_zone:
        return 1
    if same_region:
        return 2
    return 3


def _rank(peer: PeerInfo) -> int:
    if peer.origin:
        return 1
    return 0 if peer.complete else 2


def order(
    peers: list[PeerInfo],
    me: PeerInfo,
    numwant: int,
    *,
    origins_only: bool = False,
    rng: random.Random | None = None,
) -> list[PeerInfo]:
    rng = rng or random
    mine = (me.joined, me.peer_id)
    candidates = [
        p for p in peers
        if (p.joined, p.peer_id) < mine and (p.ip, p.port) != (me.ip, me.port) and (p.origin or not origins_only)
    ]
    keyed = [((_tier(p, me), _rank(p), rng.random()), p) for p in candidates]
    keyed.sort(key=lambda kp: kp[0])
    return [p for _, p in keyed[:numwant]]
