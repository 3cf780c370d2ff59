from __future__ import annotations

from dataclasses import dataclass, field

from common.sections import LogConfig, RedisConfig, RingConfig, ServerConfig


@dataclass(frozen=True)
class AnnounceConfig:
    # Seconds between a client's announces. Short, because a new agent is found only through
    # announces; libtorrent clients also need min_announce_interval lowered to honour it.
    interval: int = 15
    min_interval: int = 5
    # A peer not heard from for this long is dropped from handouts.
    peer_ttl: int = 60
    numwant_default: int = 50
    numwant_max: int = 200
    # An announce picks its peers by locality from at most this many (or numwant, if more)
    # of those that joined before the client: a uniform random sample when there are more,
    # origins always in. Reading the whole swarm per announce cost the tracker 33 ms of CPU
    # at 1,000 peers and 160 ms at 5,000 (make bench-tracker): at 15 s intervals, more than
    # a core from about 500 peers on one blob. Redis spends about 2.5 us per pooled peer.
    handout_pool: int = 200
    # Benchmark baseline: hand out only origins, so agents cannot share with each other.
    origins_only: bool = False


@dataclass(frozen=True)
class TrackerConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7602))
    redis: RedisConfig = field(default_factory=RedisConfig)
    origins: RingConfig = field(default_factory=RingConfig)
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    # Metainfo never changes for a digest, so it can be cached for long.
    metainfo_ttl: int = 7 * 24 * 3600
    # Announce URL written into served .torrent files; default: this request's host.
    public_url: str = ""
    log: LogConfig = field(default_factory=LogConfig)
