"""The one place that builds the proxy's concrete objects from config."""

from __future__ import annotations

from pathlib import Path

from common import server
from common.errors import ConfigError
from proxy.config import ProxyConfig

HERE = Path(__file__).parent


def build_app(cfg: ProxyConfig):
    from buildindex.client import BuildIndexClient
    from origin.client import ClusterClient
    from proxy.app import create_app

    if not cfg.origins.members:
        raise ConfigError("proxy: origins.members is empty")
    if not cfg.build_index:
        raise ConfigError("proxy: build_index is empty")
    ring = cfg.origins.build()
    return create_app(cfg, origins=ClusterClient(ring), build_index=BuildIndexClient(list(cfg.build_index)))


def app_from_env():
    return server.app_from_env("proxy", ProxyConfig, build_app)


def main(argv=None) -> None:
    server.main("proxy", ProxyConfig, build_app, HERE / "gunicorn.conf.py", argv)
