"""The one place that builds the agent's concrete objects from config."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from agent.config import AgentConfig
from common import server

HERE = Path(__file__).parent


def announce_urls(cfg: AgentConfig) -> list[str]:
    """Tracker announce URLs carrying this host's locality (ignored by trackers that do not
    know the parameters)."""
    loc = {k: v for k, v in (("region", cfg.locality.region), ("zone", cfg.locality.zone),
                             ("rack", cfg.locality.rack)) if v}
    query = f"?{urlencode(loc)}" if loc else ""
    return [f"http://{t}/announce{query}" for t in cfg.trackers]


def binds(cfg: AgentConfig) -> list[str]:
    """The server port, and the registry port unless it is turned off (port 0)."""
    return [cfg.server.addr] + ([cfg.registry.addr] if cfg.registry.port else [])


def build_app(cfg: AgentConfig):
    from agent.app import create_app, serve
    from common.store import CAStore
    from torrents.session import TorrentSession
    from tracker.client import TrackerClient

    session = TorrentSession(cfg.torrent, trackers=announce_urls(cfg), user_agent="kraken-p2p-agent/0.1")
    build_index = None
    if cfg.build_index:
        from buildindex.client import BuildIndexClient

        build_index = BuildIndexClient(list(cfg.build_index))
    app = create_app(cfg, store=CAStore(cfg.cache.root), session=session,
                     tracker=TrackerClient(list(cfg.trackers)), build_index=build_index)
    return serve(app, cfg)


def app_from_env():
    return server.app_from_env("agent", AgentConfig, build_app)


def main(argv=None) -> None:
    server.main("agent", AgentConfig, build_app, HERE / "gunicorn.conf.py", argv, binds=binds)
