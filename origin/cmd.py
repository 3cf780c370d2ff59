"""The one place that builds the origin's concrete objects from config."""

from __future__ import annotations

from pathlib import Path

from common import server
from origin.config import OriginConfig

HERE = Path(__file__).parent


def build_app(cfg: OriginConfig):
    from common.store import CAStore
    from origin.app import create_app
    from torrents.session import TorrentSession

    # Origins check each other actively too, so replication and the locations they hand
    # out skip a dead fellow without waiting for a request to fail on it.
    ring = cfg.ring.build((cfg.self_addr,), skip=cfg.self_addr)
    # Origins mark their announces so trackers rank them after agents that have finished.
    trackers = [f"http://{t}/announce?origin=1" for t in cfg.trackers]
    session = TorrentSession(cfg.torrent, trackers=trackers, user_agent="kraken-p2p-origin/0.1")
    from tracker.client import TrackerClient

    trackers = TrackerClient(list(cfg.trackers)) if cfg.trackers else None
    from origin.backing import Backing

    store = CAStore(cfg.store.root)
    backing = Backing.open(store, cfg.backends, cfg.writeback, cfg.refresh.timeout) if cfg.backends else None
    return create_app(cfg, store=store, session=session, ring=ring, trackers=trackers, backing=backing)


def app_from_env():
    return server.app_from_env("origin", OriginConfig, build_app)


def main(argv=None) -> None:
    server.main("origin", OriginConfig, build_app, HERE / "gunicorn.conf.py", argv)
