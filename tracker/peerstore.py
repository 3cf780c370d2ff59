"""Peer state per torrent. Redis in production (shared by every tracker instance), an
in-memory store for unit tests; one contract test suite runs against both."""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class PeerInfo:
    peer_id: bytes
    ip: str
    port: int
    complete: bool = False
    origin: bool = False
    zone: str = ""
    rack: str = ""
    region: str = ""
    # The peer's place in the order the store first heard of the torrent's peers (1, 2,
    # ...; kept across its announces, set by the store): tracker.handout hands a peer only
    # those that joined before it.
    joined: int = 0

    def to_json(self, now: float) -> str:
        d = asdict(self)
        del d["joined"]  # the store keeps it apart: an announce must not overwrite it
        d["peer_id"] = self.peer_id.hex()
        d["ts"] = now
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw) -> tuple[PeerInfo, float]:
        d = json.loads(raw)
        ts = d.pop("ts")
        d["peer_id"] = bytes.fromhex(d["peer_id"])
        return cls(**d), ts


@dataclass(frozen=True)
class SwarmCounts:
    complete: int
    incomplete: int
    downloaded: int


class PeerStore(ABC):
    def __init__(self, ttl: float, clock=time.time):
        self.ttl = ttl
        self.clock = clock

    @abstractmethod
    def update(self, infohash: bytes, peer: PeerInfo) -> int:
        """Records an announce; returns the peer's `joined` (new if the store did not know
        the peer, else the one it had). Numbers only grow while the torrent has peers, so
        a peer that joined later was written later, and its read of the swarm, made after
        its write, saw every peer numbered before it."""

    @abstractmethod
    def remove(self, infohash: bytes, peer_id: bytes) -> None: ...

    @abstractmethod
    def peers(self, infohash: bytes) -> list[PeerInfo]:
        """Live peers (heard from within ttl), each with its `joined`."""

    @abstractmethod
    def mark_completed(self, infohash: bytes) -> None:
        """Counts a finished download (scrape's `downloaded`)."""

    @abstractmethod
    def downloaded(self, infohash: bytes) -> int: ...

    @abstractmethod
    def ping(self) -> None:
        """Raises if the store cannot answer."""

    @abstractmethod
    def next_slot(self, infohash: bytes) -> int:
        """0, 1, 2, ... for successive calls on one torrent (shared by every tracker on
        the store): each downloader's place in its wave, which picks the pieces it fetches
        first (see agent.stripes). Forgotten SLOT_TTL s after the last call."""

    def counts(self, infohash: bytes, peers: list[PeerInfo] | None = None) -> SwarmCounts:
        """Seeders, leechers, finished downloads; pass `peers` when already fetched."""
        peers = self.peers(infohash) if peers is None else peers
        complete = sum(p.complete for p in peers)
        return SwarmCounts(complete, len(peers) - complete, self.downloaded(infohash))


# Seconds a torrent's slot counter outlives its last use. A later wave starting anywhere
# in the count is fine: only consecutive slots need to differ.
SLOT_TTL = 3600


class MemoryPeerStore(PeerStore):
    def __init__(self, ttl: float, clock=time.time):
        super().__init__(ttl, clock)
        self._swarms: dict[bytes, dict[bytes, tuple[PeerInfo, float]]] = {}
        self._joins: dict[bytes, int] = {}  # infohash -> peers numbered so far
        self._downloaded: dict[bytes, int] = {}
        self._slots: dict[bytes, tuple[int, float]] = {}  # infohash -> (next slot, last used)
        self._lock = threading.Lock()

    def update(self, infohash, peer):
        with self._lock:
            swarm = self._swarms.setdefault(infohash, {})
            known = swarm.get(peer.peer_id)
            if known is not None:
                joined = known[0].joined
            else:
                joined = self._joins[infohash] = self._joins.get(infohash, 0) + 1
            swarm[peer.peer_id] = (replace(peer, joined=joined), self.clock())
            return joined

    def remove(self, infohash, peer_id):
        with self._lock:
            self._swarms.get(infohash, {}).pop(peer_id, None)

    def peers(self, infohash):
        cutoff = self.clock() - self.ttl
        with self._lock:
            swarm = self._swarms.get(infohash, {})
            for pid in [pid for pid, (_, ts) in swarm.items() if ts < cutoff]:
                del swarm[pid]
            return [p for p, _ in swarm.values()]

    def mark_completed(self, infohash):
        with self._lock:
            self._downloaded[infohash] = self._downloaded.get(infohash, 0) + 1

    def downloaded(self, infohash):
        return self._downloaded.get(infohash, 0)

    def ping(self):
        return None

    def next_slot(self, infohash):
        now = self.clock()
        with self._lock:
            slot, used = self._slots.get(infohash, (0, now))
            if now - used > SLOT_TTL:
                slot = 0
            self._slots[infohash] = (slot + 1, now)
            return slot


# KEYS: the torrent's peers hash and its joins hash (peer id -> joined, and under "#" the
# count so far); ARGV: peer id, peer JSON, ttl. Atomic, so numbers follow the order of the
# writes (see PeerStore.update).
_UPDATE = """
local joined = redis.call('HGET', KEYS[2], ARGV[1])
if not joined then
  joined = redis.call('HINCRBY', KEYS[2], '#', 1)
  redis.call('HSET', KEYS[2], ARGV[1], joined)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return tonumber(joined)
"""


class RedisPeerStore(PeerStore):
    """One hash per torrent, peer id -> JSON with a timestamp, and beside it one of peer id
    -> joined. Both expire after ttl without announces; stale fields are dropped as they
    are read."""

    def __init__(self, redis, ttl: float, clock=time.time, prefix: str = "kraken:"):
        super().__init__(ttl, clock)
        self.r = redis
        self.prefix = prefix
        self._update = redis.register_script(_UPDATE)

    def _key(self, infohash: bytes) -> str:
        return f"{self.prefix}peers:{infohash.hex()}"

    def _joins_key(self, infohash: bytes) -> str:
        return f"{self.prefix}joins:{infohash.hex()}"

    def update(self, infohash, peer):
        keys = [self._key(infohash), self._joins_key(infohash)]
        return int(self._update(keys=keys, args=[peer.peer_id.hex(), peer.to_json(self.clock()), int(self.ttl) + 1]))

    def remove(self, infohash, peer_id):
        with self.r.pipeline(transaction=False) as p:
            p.hdel(self._key(infohash), peer_id.hex())
            p.hdel(self._joins_key(infohash), peer_id.hex())
            p.execute()

    def peers(self, infohash):
        key, joins_key = self._key(infohash), self._joins_key(infohash)
        cutoff = self.clock() - self.ttl
        with self.r.pipeline(transaction=False) as p:
            p.hgetall(key)
            p.hgetall(joins_key)
            raw_peers, joins = p.execute()
        live, stale = [], []
        for field, raw in raw_peers.items():
            peer, ts = PeerInfo.from_json(raw)
            if ts < cutoff:
                stale.append(field)
            else:
                live.append(replace(peer, joined=int(joins.get(field, 0))))
        if stale:
            with self.r.pipeline(transaction=False) as p:
                p.hdel(key, *stale)
                p.hdel(joins_key, *stale)
                p.execute()
        return live

    def mark_completed(self, infohash):
        self.r.incr(f"{self.prefix}downloaded:{infohash.hex()}")

    def downloaded(self, infohash):
        return int(self.r.get(f"{self.prefix}downloaded:{infohash.hex()}") or 0)

    def ping(self):
        self.r.ping()

    def next_slot(self, infohash):
        key = f"{self.prefix}slot:{infohash.hex()}"
        with self.r.pipeline(transaction=True) as p:
            p.incr(key)
            p.expire(key, SLOT_TTL)
            count, _ = p.execute()
        return int(count) - 1


class MetainfoCache:
    """Metainfo by digest in Redis. The info-hash -> digest index lets the tracker name the
    blob behind an announce."""

    def __init__(self, redis, ttl: int, prefix: str = "kraken:"):
        self.r = redis
        self.ttl = ttl
        self.prefix = prefix

    def get(self, digest_hex: str) -> bytes | None:
        return self.r.get(f"{self.prefix}metainfo:{digest_hex}")

    def put(self, digest_hex: str, infohash_hex: str, info: bytes) -> None:
        with self.r.pipeline(transaction=False) as p:
            p.set(f"{self.prefix}metainfo:{digest_hex}", info, ex=self.ttl)
            p.set(f"{self.prefix}infohash:{infohash_hex}", digest_hex, ex=self.ttl)
            p.execute()
