"""The one place that builds build-index's concrete objects from config."""

from __future__ import annotations

from pathlib import Path

from buildindex.config import BuildIndexConfig
from common import server

HERE = Path(__file__).parent


def build_app(cfg: BuildIndexConfig):
    from buildindex.app import create_app
    from buildindex.client import BuildIndexClient
    from buildindex.replication import Remotes, Replicator
    from buildindex.tagstore import RedisTagStore
    from buildindex.tagtypes import DefaultTagType, DockerTagType, TagTypes
    from common.errors import ConfigError
    from common.metrics import Metrics

    origins = None
    if cfg.origins.members:
        from origin.client import ClusterClient

        ring = cfg.origins.build()
        origins = ClusterClient(ring)
    elif cfg.needs_origins:
        raise ConfigError("docker tag types need the origin ring: set origins.members "
                          "(or make every tag type `default`)")
    kinds = {"docker": DockerTagType(origins, cfg.manifest_pending_timeout), "default": DefaultTagType()}
    tag_types = TagTypes([(r.pattern, kinds[r.type]) for r in cfg.tag_types], kinds[cfg.default_type])

    metrics = Metrics("buildindex")
    results = metrics.counter("kraken_buildindex_replications_total", "Replication attempts by result.",
                              ["result"])
    timeout = (3, cfg.replication.timeout)

    def send(remote, tag, digest):
        BuildIndexClient([remote], timeout=timeout).put_tag(tag, digest)

    replicator = Replicator(
        Remotes(cfg.remotes), send,
        max_attempts=cfg.replication.max_attempts, base_delay=cfg.replication.base_delay,
        max_delay=cfg.replication.max_delay, workers=cfg.replication.workers,
        on_result=lambda result: results.labels(result).inc(),
    )
    backing = None
    if cfg.backends:
        from buildindex.backing import TagBacking

        backing = TagBacking.open(cfg.backends, cfg.writeback, cfg.state_dir)
    return create_app(cfg, tag_store=RedisTagStore(cfg.redis.client()), tag_types=tag_types,
                      replicator=replicator, backend=backing, metrics=metrics)


def app_from_env():
    return server.app_from_env("buildindex", BuildIndexConfig, build_app)


def main(argv=None) -> None:
    server.main("buildindex", BuildIndexConfig, build_app, HERE / "gunicorn.conf.py", argv)
