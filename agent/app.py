from __future__ import annotations

import gevent
from flask import Flask

from agent.cache import Evictor
from agent.config import AgentConfig
from agent.dispatch import ByListener
from agent.downloader import Downloader
from agent.images import Images
from agent.views import blobs, registry, tags
from common import oci
from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics
from common.store import CAStore
from torrents.seeder import Seeder
from torrents.session import TorrentSession
from tracker.client import TrackerClient


def create_app(config: AgentConfig, *, store: CAStore, session: TorrentSession, tracker: TrackerClient,
               build_index=None) -> Flask:
    """The server port's app. The registry port's app shares its downloads and is kept in
    `app.extensions["registry_app"]`; `serve(app)` puts the two behind one WSGI callable.
    `build_index` is a buildindex.client.BuildIndexClient (None: tags are unavailable)."""
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
    images = Images(build_index, downloader, config.images)
    metrics.torrent_gauges(session)
    app.extensions.update(downloader=downloader, seeder=seeder, evictor=evictor, images=images)
    install_error_handler(app)
    trust_proxies(app, config.server.trusted_proxies)
    checks = {"disk": store.free_bytes, "tracker": tracker.ping}
    if build_index is not None:
        checks["build_index"] = build_index.ping
    app.register_blueprint(health_blueprint(checks, metrics))
    app.register_blueprint(blobs.bp)
    app.register_blueprint(tags.bp)
    registry_app = create_registry_app(downloader=downloader, images=images, metrics=metrics)
    app.extensions["registry_app"] = registry_app

    greenlets = [gevent.spawn(seeder.seed_all), gevent.spawn(evictor.run, config.cache.sweep_interval)]

    def shutdown():
        gevent.killall(greenlets, block=False)
        session.stop()

    app.kraken_shutdown = shutdown
    return app


def create_registry_app(*, downloader: Downloader, images: Images, metrics: Metrics | None = None) -> Flask:
    """The registry port's app: read-only OCI distribution API, errors in its envelope."""
    app = Flask("agent-registry")
    if metrics is not None:
        metrics.instrument(app)
    app.extensions.update(downloader=downloader, images=images)
    install_error_handler(app)
    oci.install_registry_errors(app)
    app.register_blueprint(registry.bp)
    return app


def serve(app: Flask, config: AgentConfig) -> ByListener:
    """The WSGI callable gunicorn runs: requests on the registry port go to the registry
    app, everything else to the server app."""
    wsgi = ByListener(app, {config.registry.port: app.extensions["registry_app"]})
    wsgi.kraken_shutdown = app.kraken_shutdown
    return wsgi
