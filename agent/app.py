from __future__ import annotations

import gevent
from flask import Flask

from agent.cache import Evictor
from agent.config import AgentConfig
from agent.downloader import Downloader
from agent.views import blobs
from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics
from common.store import CAStore
from torrents.seeder import Seeder
from torrents.session import TorrentSession
from tracker.client import TrackerClient


def create_app(config: AgentConfig, *, store: CAStore, session: TorrentSession, tracker: TrackerClient) -> Flask:
    app = Flask("agent")
    app.config["KRAKEN"] = config
    metrics = Metrics("agent")
    metrics.instrument(app)
    seeder = Seeder(store, session)
    downloader = Downloader(
        store, session, seeder, tracker, config.download,
        metrics=metrics.histogram("kraken_agent_download_seconds", "Time to download and verify a blob.",
                                  buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)),
    )
    evictor = Evictor(store, seeder, config.cache.capacity_bytes, config.cache.idle_ttl)
    metrics.torrent_gauges(session)
    app.extensions.update(downloader=downloader, seeder=seeder, evictor=evictor)
    install_error_handler(app)
    trust_proxies(app, config.server.trusted_proxies)
    app.register_blueprint(health_blueprint({"disk": store.free_bytes, "tracker": tracker.ping}, metrics))
    app.register_blueprint(blobs.bp)

    greenlets = [gevent.spawn(seeder.seed_all), gevent.spawn(evictor.run, config.cache.sweep_interval)]

    def shutdown():
        gevent.killall(greenlets, block=False)
        session.stop()

    app.kraken_shutdown = shutdown
    return app
