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
    # Large blobs downloading at once; more wait their turn, in the order they were asked
    # for. Docker extracts an image's layers one by one in order, so the first layer
    # arriving whole early beats all of them arriving together at the end: extraction then
    # overlaps the download. Blobs smaller than `queue_min_bytes` (manifests, configs) never
    # wait. 0 admits every download at once. Measured (cold docker pull of 4 x 50 MiB
    # through one agent, bench-registry's layout): with the agent's download capped at
    # 64 MiB/s, as a link would, 3.96-5.08 s (median 3.99) with 1 against 4.82-5.81 s
    # (median 4.99) with 0; uncapped, where two cores rather than a link are the limit, the
    # two are within noise (median ratio to docker-registry 1.47x with 1, 1.42x with 0, 8
    # rounds each).
    max_active: int = 1
    queue_min_bytes: int = 8 << 20
    # Ask the tracker for a slot in the blob's wave and fetch that stripe of pieces first,
    # so agents starting together take different pieces from the origin (agent.stripes).
    stripes: bool = True
    # A download that has no stripes (the first of its wave, or alone) fetches pieces in
    # order until others show up: a client streaming it then receives bytes as they land,
    # not most of the blob in a burst once the last stray piece is in (agent.downloader).
    sequential: bool = True


@dataclass(frozen=True)
class Locality:
    """Where this host is; sent with announces so the tracker hands out near peers first."""

    region: str = ""
    zone: str = ""
    rack: str = ""


@dataclass(frozen=True)
class RegistryConfig:
    """The read-only registry port docker and containerd pull from. Loopback by default:
    the registry answers anyone who reaches it, and only this host's runtime should."""

    host: str = "127.0.0.1"
    # Must differ from the server port: one process serves both and tells them apart by
    # the port a request arrived on. 0 turns the registry port off.
    port: int = 7607

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ImagesConfig:
    """Resolving tags and pulling whole images (registry port and preloads)."""

    # A tag's digest is reused this long (seconds) before build-index is asked again: one
    # docker pull asks for the same tag twice (HEAD, then GET). 0 asks every time.
    tag_ttl: float = 5.0
    # Blobs one preload downloads at the same time.
    preload_concurrency: int = 8
    # A GET of an image manifest starts the download of every blob it names at once: the
    # client asks for them next anyway, and docker fetches at most 3 layers at a time.
    # Measured (make bench-registry, 200 MiB in 4 layers, cold pull through the agent, two
    # runs each): 3.17 s and 2.94 s with it, 3.58 s and 3.36 s without. The price: a client
    # that reads a manifest but already has the layers (a re-pull of an unchanged image)
    # still has this agent fetch any of them it lacks.
    warm_on_manifest: bool = True


@dataclass(frozen=True)
class AgentConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7605))
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    trackers: tuple[str, ...] = ("127.0.0.1:7602",)
    # Where tags are resolved (host:port, tried in order).
    build_index: tuple[str, ...] = ("127.0.0.1:7608",)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    locality: Locality = field(default_factory=Locality)
    torrent: TorrentConfig = field(default_factory=TorrentConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self):
        if self.registry.port and self.registry.port == self.server.port:
            raise ValueError(f"registry.port and server.port are both {self.server.port}; they must differ")
