from __future__ import annotations

from dataclasses import dataclass, field

from common.sections import LogConfig, RingConfig, ServerConfig, WriteBackConfig
from torrents.config import TorrentConfig


@dataclass(frozen=True)
class StoreConfig:
    root: str = "/var/cache/kraken/origin"
    # Unfinished uploads idle this long are deleted.
    upload_ttl: int = 3600


@dataclass(frozen=True)
class ReplicationConfig:
    # A fellow replica that is down is retried for about 20 minutes (1, 2, 4 ... s, at most
    # max_backoff apart) before its copy is given up on; with a storage backend it would
    # still refresh the blob when asked.
    attempts: int = 16
    backoff: float = 1.0  # seconds, doubled per attempt
    max_backoff: float = 120.0


@dataclass(frozen=True)
class RefreshConfig:
    # A blob held only by the storage backend is fetched on demand. A request waits this
    # long (s) before it is answered 202 (or until the fetch ends, with ?wait=true, up to
    # `timeout`).
    grace: float = 1.0
    timeout: float = 600.0


@dataclass(frozen=True)
class OriginTorrentConfig(TorrentConfig):
    # Agents that start together all want the pieces only the origin has yet. The more
    # requests each may queue here, the more often two of them are sent the same piece,
    # and every duplicate delays the whole swarm, which advances at the rate the origin
    # injects new pieces. Measured (swarm benchmark, 8 MiB/s per host, fraction of the
    # per-host maximum at p50 / origin upload per blob): 10 agents, 128 MiB: 2000 (the
    # libtorrent default) 0.658 / 1.35, 32: 0.747 / 1.19, 16: 0.749 / 1.16, 8: 0.769 / 1.11,
    # 4: 0.737 / 1.11; 10 agents, 64 MiB: 0.598 -> 0.720 with 8.
    max_peer_requests: int = 8
    # Every 16 KiB block an origin sends is a job handed to a disk thread; with libtorrent's
    # ten threads, much of a seeding origin's CPU went to waking them and their lock.
    # Measured (4 x 50 MiB through one agent from one origin, page-cached blobs): origin CPU
    # 0.66-0.82 s with 1 thread, 0.88-0.93 s with 4, 0.81-1.24 s with 10; cold docker pull
    # through an agent (bench-registry layout), median ratio to docker-registry 1.41x with 1
    # thread against 1.50x with 10. Raise it for blobs on disks with real seek latency.
    disk_threads: int = 1
    # An agent's first blocks came disk, send, disk, send. Two sessions, 1 MiB, direct
    # dial: 8.2-8.5 ms to finish with 1 MiB of read-ahead against 9.7-10.8 ms; cold 1 MiB
    # through an agent, median agent/direct ratio 5.34 and 5.49 against 5.41 and 5.70.
    # Not for capped sessions, nor for agents: with it on every host, capped swarms came
    # out 0.01-0.015 lower (N=10, S=64 MiB: 0.842, 0.834 against 0.855, 0.845) and the
    # unlimited N=20 swarm 190 and 207 MiB/s against 207 and 226.
    read_ahead_bytes: int = 1 << 20
    # An origin only seeds: it hangs up on agents once they have the whole blob, so its
    # connections follow the agents still downloading (TorrentConfig).
    close_redundant_connections: bool = True


@dataclass(frozen=True)
class OriginConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7603))
    # This origin's name in the ring (host:port as other components reach it); defaults to
    # server host:port.
    advertise: str = ""
    ring: RingConfig = field(default_factory=RingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    torrent: OriginTorrentConfig = field(default_factory=OriginTorrentConfig)
    # Trackers (host:port) the origin announces its seeds to.
    trackers: tuple[str, ...] = ()
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    # Storage backends by namespace: [{namespace: regex, backend: fs|s3|http|registry,
    # <backend>: {options}, bandwidth: {egress_bytes_per_sec, ingress_bytes_per_sec}}];
    # first match wins; none means local disk only.
    backends: tuple[dict, ...] = ()
    writeback: WriteBackConfig = field(default_factory=WriteBackConfig)
    refresh: RefreshConfig = field(default_factory=RefreshConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def self_addr(self) -> str:
        return self.advertise or self.server.addr
