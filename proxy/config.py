from __future__ import annotations

from dataclasses import dataclass, field

from common.sections import LogConfig, RingConfig, ServerConfig


@dataclass(frozen=True)
class UploadsConfig:
    # Blob uploads in progress, shared by every worker of this proxy (one data file and a
    # small JSON state per upload). Must be local disk: workers lock the files with flock.
    dir: str = "/var/cache/kraken/proxy/uploads"
    # Uploads idle this long (seconds) are deleted, and the sweep runs this often.
    ttl: int = 3600
    sweep_interval: float = 60.0


@dataclass(frozen=True)
class RegistryConfig:
    # `GET /v2/_catalog` without `n` returns this many repositories; a larger `n` is refused
    # with PAGINATION_NUMBER_INVALID (distribution's catalog.maxentries).
    catalog_default_entries: int = 100
    catalog_max_entries: int = 1000


@dataclass(frozen=True)
class ProxyConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7609))
    # The origin cluster: blobs and manifests are uploaded to and read from it.
    origins: RingConfig = field(default_factory=RingConfig)
    # Build-index servers (host:port): tags. Required, like origins.members.
    build_index: tuple[str, ...] = ()
    uploads: UploadsConfig = field(default_factory=UploadsConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    log: LogConfig = field(default_factory=LogConfig)
