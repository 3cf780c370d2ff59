"""The one place that builds the tracker's concrete objects from config."""

from __future__ import annotations

from pathlib import Path

from common import server
from tracker.config import TrackerConfig

HERE = Path(__file__).parent


def build_app(cfg: TrackerConfig):
    from origin.client import ClusterClient
    from tracker.app import create_app
    from tracker.peerstore import MetainfoCache, RedisPeerStore

    r = cfg.redis.client()
    ring = cfg.origins.build()
    return create_app(
        cfg,
        peer_store=RedisPeerStore(r, ttl=cfg.announce.peer_ttl),
        metainfo_cache=MetainfoCache(r, ttl=cfg.metainfo_ttl),
        origins=ClusterClient(ring),
    )


def app_from_env():
    return server.app_from_env("tracker", TrackerConfig, build_app)


def main(argv=None) -> None:
    server.main("tracker", TrackerConfig, build_app, HERE / "gunicorn.conf.py", argv)
