from __future__ import annotations

from dataclasses import dataclass, field

from common.sections import LogConfig, RingConfig, ServerConfig
from torrents.config import TorrentConfig


@dataclass(frozen=True)
class StoreConfig:
    root: str = "/var/cache/kraken/origin"
    # Unfinished uploads idle this long are deleted.
    upload_ttl: int = 3600


@dataclass(frozen=True)
class ReplicationConfig:
    attempts: int = 5
    backoff: float = 1.0  # seconds, doubled per attempt


@dataclass(frozen=True)
class OriginConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7603))
    # This origin's name in the ring (host:port as other components reach it); defaults to
    # server host:port.
    advertise: str = ""
    ring: RingConfig = field(default_factory=RingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    torrent: TorrentConfig = field(default_factory=TorrentConfig)
    # Trackers (host:port) the origin announces its seeds to.
    trackers: tuple[str, ...] = ()
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def self_addr(self) -> str:
        return self.advertise or self.server.addr
