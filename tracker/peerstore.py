"""Peer state per torrent. Redis in production (shared by every tracker instance), an
in-memory store for unit tests; one contract test suite runs against both."""

from __future__ import annotations

import json
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import NamedTuple


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

    def to_json(self) -> str:
        """The fields but `joined` (the store keeps it apart: an announce must not overwrite
        it) as a JSON list in field order, which parses in two thirds of the time of an
        object: a handout parses one per candidate."""
        fields = [self.peer_id.hex(), self.ip, self.port, self.complete, self.origin, self.zone, self.rack, self.region]
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw, joined: int = 0) -> PeerInfo:
        fields = json.loads(raw)
        fields[0] = bytes.fromhex(fields[0])
        return cls(*fields, joined)


@dataclass(frozen=True)
class SwarmCounts:
    complete: int
    incomplete: int
    downloaded: int


class Announced(NamedTuple):
    joined: int  # the announcing peer's
    earlier: list[PeerInfo]  # as PeerStore.earlier_peers
    counts: SwarmCounts


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
        """Every live peer (heard from within ttl), each with its `joined`. Reads the whole
        swarm: for tools and tests; announces use earlier_peers."""

    @abstractmethod
    def earlier_peers(self, infohash: bytes, me: PeerInfo, limit: int) -> list[PeerInfo]:
        """Live peers that joined before `me` (a lower `joined`): all of them when they are
        at most `limit`, else a uniform random sample of `limit` of them; either way with
        every such origin added. Its cost grows with `limit`, not with the swarm."""

    @abstractmethod
    def seeding_origins(self, infohash: bytes, limit: int) -> list[PeerInfo]:
        """Up to `limit` live origins that announced the torrent complete."""

    @abstractmethod
    def counts(self, infohash: bytes) -> SwarmCounts:
        """Seeders, leechers (live peers) and finished downloads, without reading the swarm."""

    @abstractmethod
    def mark_completed(self, infohash: bytes) -> None:
        """Counts a finished download (scrape's `downloaded`)."""

    def announce(self, infohash: bytes, peer: PeerInfo, limit: int, *, completed: bool = False) -> Announced:
        """Records an announce (update; `completed`: a finished download, mark_completed)
        and reads what its answer needs: earlier_peers and counts."""
        joined = self.update(infohash, peer)
        if completed:
            self.mark_completed(infohash)
        return Announced(joined, self.earlier_peers(infohash, replace(peer, joined=joined), limit),
                         self.counts(infohash))

    @abstractmethod
    def ping(self) -> None:
        """Raises if the store cannot answer."""

    @abstractmethod
    def next_slot(self, infohash: bytes) -> int:
        """0, 1, 2, ... for successive calls on one torrent (shared by every tracker on
        the store): each downloader's place in its wave, which picks the pieces it fetches
        first (see agent.stripes). Forgotten SLOT_TTL s after the last call."""


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

    def _live(self, infohash: bytes) -> dict[bytes, tuple[PeerInfo, float]]:
        """The torrent's swarm with stale peers dropped; call with the lock held."""
        cutoff = self.clock() - self.ttl
        swarm = self._swarms.get(infohash, {})
        for pid in [pid for pid, (_, ts) in swarm.items() if ts < cutoff]:
            del swarm[pid]
        return swarm

    def update(self, infohash, peer):
        with self._lock:
            swarm = self._live(infohash)
            self._swarms[infohash] = swarm
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
        with self._lock:
            return [p for p, _ in self._live(infohash).values()]

    def earlier_peers(self, infohash, me, limit):
        with self._lock:
            earlier = [p for p, _ in self._live(infohash).values() if p.joined < me.joined]
            if len(earlier) <= limit:
                return earlier
            picked = random.sample(earlier, limit)
        chosen = {p.peer_id for p in picked}
        return picked + [p for p in earlier if p.origin and p.peer_id not in chosen]

    def seeding_origins(self, infohash, limit):
        with self._lock:
            return [p for p, _ in self._live(infohash).values() if p.origin and p.complete][:limit]

    def counts(self, infohash):
        with self._lock:
            live = [p for p, _ in self._live(infohash).values()]
            complete = sum(p.complete for p in live)
            return SwarmCounts(complete, len(live) - complete, self._downloaded.get(infohash, 0))

    def mark_completed(self, infohash):
        with self._lock:
            self._downloaded[infohash] = self._downloaded.get(infohash, 0) + 1

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


# The Redis store keeps, per torrent (KEYS in this order in every script):
#   1 swarm      hash    peer id -> PeerInfo JSON
#   2 joincount  string  peers numbered so far
#   3 joinorder  zset    peer id, scored by its `joined`
#   4 seen       zset    peer id, scored by the time of its last announce
#   5 seeds      set     peer ids that announced as complete
#   6 origins    set     peer ids of origins
# all expiring together ttl after the last announce. Each script first drops the peers not
# heard from since the cutoff (ARGV[1]), found through `seen` in O(log N + stale) (prune),
# so no read walks the swarm.
_FUNCTIONS = """
-- Drops peers from every key that holds them.
local function forget(ids)
  for i = 1, #ids, 500 do
    local batch = {unpack(ids, i, math.min(i + 499, #ids))}
    redis.call('HDEL', KEYS[1], unpack(batch))
    for k = 3, 4 do redis.call('ZREM', KEYS[k], unpack(batch)) end
    for k = 5, 6 do redis.call('SREM', KEYS[k], unpack(batch)) end
  end
end

local function prune(cutoff)
  forget(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. cutoff))
end

-- Atomic within a script, so numbers follow the order of the writes (PeerStore.update).
local function update(pid, json, now, ttl, complete, origin)
  local joined = redis.call('ZSCORE', KEYS[3], pid)
  if not joined then
    joined = redis.call('INCR', KEYS[2])
    redis.call('ZADD', KEYS[3], joined, pid)
  end
  redis.call('HSET', KEYS[1], pid, json)
  redis.call('ZADD', KEYS[4], now, pid)
  redis.call(complete == '1' and 'SADD' or 'SREM', KEYS[5], pid)
  redis.call(origin == '1' and 'SADD' or 'SREM', KEYS[6], pid)
  for k = 1, 6 do redis.call('EXPIRE', KEYS[k], ttl) end
  return tonumber(joined)
end

-- "<joined> <peer JSON>" for each peer that joined before `joined` (one string each:
-- redis-py parses replies in Python, element by element): all of them up to `limit`, else
-- distinct ranks below the caller's picked by Floyd's algorithm, each looked up in
-- O(log N); then every such origin. (ZRANDMEMBER was cheaper by a third but not uniform:
-- drawing 10 of 50 peers 20,000 times, some came 3,100 times and others 5,000.)
local function earlier(joined, limit, seed)
  local n = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. joined)
  local picked = {}
  if n == 0 then
    return {}  -- (ZRANGE 0 -1 would be the whole set)
  elseif n <= limit then
    picked = redis.call('ZRANGE', KEYS[3], 0, n - 1, 'WITHSCORES')
  else
    math.randomseed(seed)
    local chosen = {}
    for j = n - limit + 1, n do
      local t = math.random(j)
      if chosen[t] then t = j end
      chosen[t] = true
      local e = redis.call('ZRANGE', KEYS[3], t - 1, t - 1, 'WITHSCORES')
      picked[#picked + 1] = e[1]
      picked[#picked + 1] = e[2]
    end
  end
  local have = {}
  for i = 1, #picked, 2 do have[picked[i]] = true end
  for _, g in ipairs(redis.call('SMEMBERS', KEYS[6])) do
    local s = redis.call('ZSCORE', KEYS[3], g)
    if not have[g] and s and tonumber(s) < joined then
      picked[#picked + 1] = g
      picked[#picked + 1] = s
    end
  end
  local ids = {}
  for i = 1, #picked, 2 do ids[#ids + 1] = picked[i] end
  local raws = redis.call('HMGET', KEYS[1], unpack(ids))
  local out = {}
  for i, raw in ipairs(raws) do
    if raw then out[#out + 1] = picked[2 * i] .. ' ' .. raw end
  end
  return out
end
"""

# ARGV: cutoff, peer id, peer JSON, now, ttl, complete (0/1), origin (0/1).
_UPDATE = _FUNCTIONS + """
prune(ARGV[1])
return update(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
"""

# ARGV: cutoff, the caller's `joined`, limit, seed.
_EARLIER = _FUNCTIONS + """
prune(ARGV[1])
return earlier(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
"""

# KEYS 1-6 and the downloads counter; ARGV as _UPDATE's, then a finished download (0/1),
# limit, seed. An announce's whole answer in one round trip: joined, earlier peers, live
# peers, seeds, downloads.
_ANNOUNCE = _FUNCTIONS + """
prune(ARGV[1])
local joined = update(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
if ARGV[8] == '1' then redis.call('INCR', KEYS[7]) end
local pool = earlier(joined, tonumber(ARGV[9]), tonumber(ARGV[10]))
return {joined, pool, redis.call('ZCARD', KEYS[4]), redis.call('SCARD', KEYS[5]),
        tonumber(redis.call('GET', KEYS[7]) or 0)}
"""

# ARGV: cutoff, limit. Returns the peers' JSON.
_SEEDING_ORIGINS = _FUNCTIONS + """
prune(ARGV[1])
local ids = redis.call('SINTER', KEYS[5], KEYS[6])
if #ids == 0 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ids, 1, math.min(#ids, tonumber(ARGV[2]))))
"""

# ARGV: peer id.
_REMOVE = _FUNCTIONS + """
forget({ARGV[1]})
"""

# KEYS 1-6 and the downloads counter; ARGV: cutoff. Returns live peers, seeds, downloads.
_COUNT = _FUNCTIONS + """
prune(ARGV[1])
return {redis.call('ZCARD', KEYS[4]), redis.call('SCARD', KEYS[5]), tonumber(redis.call('GET', KEYS[7]) or 0)}
"""


class RedisPeerStore(PeerStore):
    """A torrent's swarm in six keys (above), shared by every tracker on the store. Writes
    and reads cost O(log N) in the swarm's size N, a handout O(limit log N)."""

    # (Named apart from the single hash per torrent of earlier versions, which expires
    # unread after an upgrade.)
    KINDS = ("swarm", "joincount", "joinorder", "seen", "seeds", "origins")

    def __init__(self, redis, ttl: float, clock=time.time, prefix: str = "kraken:"):
        super().__init__(ttl, clock)
        self.r = redis
        self.prefix = prefix
        self._update = redis.register_script(_UPDATE)
        self._earlier = redis.register_script(_EARLIER)
        self._count = redis.register_script(_COUNT)
        self._remove = redis.register_script(_REMOVE)
        self._announce = redis.register_script(_ANNOUNCE)
        self._seeding_origins = redis.register_script(_SEEDING_ORIGINS)

    def keys(self, infohash: bytes) -> list[str]:
        return [f"{self.prefix}{kind}:{infohash.hex()}" for kind in self.KINDS]

    def _cutoff(self) -> str:
        return repr(self.clock() - self.ttl)

    def _update_args(self, peer: PeerInfo) -> list:
        now = self.clock()
        return [repr(now - self.ttl), peer.peer_id.hex(), peer.to_json(), repr(now), int(self.ttl) + 1,
                int(peer.complete), int(peer.origin)]

    def _downloaded_key(self, infohash: bytes) -> str:
        return f"{self.prefix}downloaded:{infohash.hex()}"

    def update(self, infohash, peer):
        return int(self._update(keys=self.keys(infohash), args=self._update_args(peer)))

    def announce(self, infohash, peer, limit, *, completed=False):
        """The same in one round trip (one script)."""
        args = [*self._update_args(peer), int(completed), limit, random.randrange(1 << 31)]
        joined, pool, live, seeds, downloaded = self._announce(
            keys=[*self.keys(infohash), self._downloaded_key(infohash)], args=args)
        return Announced(int(joined), [self._decode(x) for x in pool],
                         SwarmCounts(int(seeds), int(live) - int(seeds), int(downloaded)))

    def remove(self, infohash, peer_id):
        self._remove(keys=self.keys(infohash), args=[peer_id.hex()])

    @staticmethod
    def _decode(joined_and_raw) -> PeerInfo:
        joined, raw = joined_and_raw.split(b" ", 1)
        return PeerInfo.from_json(raw, int(float(joined)))

    def peers(self, infohash):
        keys = self.keys(infohash)
        self._count(keys=[*keys, self._downloaded_key(infohash)], args=[self._cutoff()])  # prunes
        with self.r.pipeline(transaction=True) as p:
            p.zrange(keys[2], 0, -1, withscores=True)
            p.hgetall(keys[0])
            order, raws = p.execute()
        return [PeerInfo.from_json(raws[pid], int(joined)) for pid, joined in order if pid in raws]

    def earlier_peers(self, infohash, me, limit):
        args = [self._cutoff(), me.joined, limit, random.randrange(1 << 31)]
        return [self._decode(x) for x in self._earlier(keys=self.keys(infohash), args=args)]

    def seeding_origins(self, infohash, limit):
        raws = self._seeding_origins(keys=self.keys(infohash), args=[self._cutoff(), limit])
        return [PeerInfo.from_json(raw) for raw in raws if raw is not None]

    def counts(self, infohash):
        live, seeds, downloaded = self._count(keys=[*self.keys(infohash), self._downloaded_key(infohash)],
                                              args=[self._cutoff()])
        return SwarmCounts(int(seeds), int(live) - int(seeds), int(downloaded))

    def mark_completed(self, infohash):
        self.r.incr(self._downloaded_key(infohash))

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
