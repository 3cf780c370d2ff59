from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.sections import LogConfig, RedisConfig, RingConfig, ServerConfig, WriteBackConfig

TAG_TYPES = ("docker", "default")


def _compile(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{where}: invalid regex {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class TagTypeRule:
    """Tags (`repo:tag`) that `pattern` matches (re.search, as Kraken's tag types match)
    are of `type`: `docker` checks the manifest and its blobs in the origin ring, `default`
    accepts any digest."""

    pattern: str = ".*"
    type: str = "docker"

    def __post_init__(self):
        if self.type not in TAG_TYPES:
            raise ValueError(f"tag type {self.type!r} is not one of {TAG_TYPES}")
        _compile(self.pattern, "tag_types")


@dataclass(frozen=True)
class ListingConfig:
    # A listing without `limit` gets this many results (and a `next` link when there are
    # more); a larger `limit` is refused so one request cannot read a whole keyspace.
    default_limit: int = 1000
    max_limit: int = 1000

    def __post_init__(self):
        if not 1 <= self.default_limit <= self.max_limit:
            raise ValueError("listing: need 1 <= default_limit <= max_limit")


@dataclass(frozen=True)
class ReplicationConfig:
    # A remote that keeps failing is given up on after max_attempts, waiting
    # base_delay * 2**n (at most max_delay) seconds between attempts.
    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 120.0
    # Concurrent sends, so that one slow remote does not hold up the others.
    workers: int = 2
    # Seconds to wait for a remote build-index to answer one PUT.
    timeout: float = 30.0

    def __post_init__(self):
        if self.max_attempts < 1 or self.workers < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("replication: max_attempts and workers must be >= 1, delays >= 0")


@dataclass(frozen=True)
class BuildIndexConfig:
    server: ServerConfig = field(default_factory=lambda: ServerConfig(port=7608))
    redis: RedisConfig = field(default_factory=RedisConfig)
    # The origin ring that docker-type tags are checked against.
    origins: RingConfig = field(default_factory=RingConfig)
    # First matching rule wins; tags no rule matches are of `default_type`.
    tag_types: tuple[TagTypeRule, ...] = ()
    default_type: str = "docker"
    # How long a docker-type check waits for an origin still fetching the manifest from
    # its storage backend (202) before answering 503.
    manifest_pending_timeout: float = 10.0
    # Kraken's shape: remote build-index address -> regexes of the repositories (matched
    # against `repo:tag` with re.search) that are replicated to it.
    remotes: dict[str, list[str]] = field(default_factory=dict)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    listing: ListingConfig = field(default_factory=ListingConfig)
    # Storage backends by namespace (the repository), as the origin's `backends`: tags are
    # written back to them and read from them when Redis does not know a tag.
    backends: tuple[dict, ...] = ()
    writeback: WriteBackConfig = field(default_factory=WriteBackConfig)
    # Local state (the write-back queue) when backends are configured.
    state_dir: str = "/var/lib/kraken/buildindex"
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self):
        if self.default_type not in TAG_TYPES:
            raise ValueError(f"default_type {self.default_type!r} is not one of {TAG_TYPES}")
        for addr, patterns in self.remotes.items():
            if not isinstance(addr, str) or not addr:
                raise ValueError("remotes: keys must be build-index addresses (host:port)")
            if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
                raise ValueError(f"remotes.{addr}: expected a list of regexes")
            for p in patterns:
                _compile(str(p), f"remotes.{addr}")

    @property
    def needs_origins(self) -> bool:
        return self.default_type == "docker" or any(r.type == "docker" for r in self.tag_types)
