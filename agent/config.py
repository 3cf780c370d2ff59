from __future__ import annotations

from dataclasses import dataclass, field

from common.sections import LogConfig, ServerConfig
from torrents.config import TorrentConfig


@dataclass(frozen=True)
class CacheConfig:
    root: str = "/var/cache/kraken/agent"
    # Least recently used blobs are evicted beyond this many bytes...
    capacity_bytes: int = 50 << 30
    # ...and any blob unused this long (seconds).
    idle_ttl: int = 6 * 3600
    sweep_interval: float = 60.0


@dataclass(frozen=True)
class DownloadConfig:
    # Whole download, and longest time without a new byte, before giving up (seconds).
    timeout: float = 1800.0
    stall_timeout: float = 60.0
    # How long to keep asking while an origin fetches the blob from its backend (202).
    pending_timeout: float = 300.0


@dataclass(frozen=True)
class Locality:
    """Where this host is; sent with announces so the tracker hands out near peers first."""

    region: str = ""
    zone: str = ""
    rack: str = ""


@dataclass(frozen=True)
class AgentConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7605))
    trackers: tuple[str, ...] = ("127.0.0.1:7602",)
    cache: CacheConfig = field(default_factory=CacheConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    locality: Locality = field(default_factory=Locality)
    torrent: TorrentConfig = field(default_factory=TorrentConfig)
    log: LogConfig = field(default_factory=LogConfig)
