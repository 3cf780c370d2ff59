from __future__ import annotations

from flask import Flask

from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics
from tracker.config import TrackerConfig
from tracker.peerstore import MetainfoCache, PeerStore
from tracker.views import announce, metainfo


def create_app(config: TrackerConfig, *, peer_store: PeerStore, metainfo_cache: MetainfoCache, origins) -> Flask:
    """`origins` is anything with get_metainfo(namespace, digest) (origin.client.ClusterClient)."""
    app = Flask("tracker")
    app.config["KRAKEN"] = config
    metrics = Metrics("tracker")
    metrics.instrument(app)
    app.extensions.update(
        peer_store=peer_store,
        metainfo_cache=metainfo_cache,
        origins=origins,
        metrics_announces=metrics.counter("kraken_tracker_announces_total", "Announces by event.", ["event"]),
        metrics_metainfo=metrics.counter("kraken_tracker_metainfo_total", "Metainfo requests by cache result.",
                                         ["cache"]),
    )
    install_error_handler(app)
    trust_proxies(app, config.server.trusted_proxies)
    app.register_blueprint(health_blueprint({"redis": peer_store.ping}, metrics))
    app.register_blueprint(announce.bp)
    app.register_blueprint(metainfo.bp)
    return app
