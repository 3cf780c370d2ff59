from __future__ import annotations

import gevent
from flask import Flask

from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics
from common.ring import HashRing
from common.store import CAStore
from origin.blobs import BlobManager
from origin.config import OriginConfig
from origin.uploads import UploadManager
from origin.views import blobs, uploads
from torrents.session import TorrentSession


def create_app(
    config: OriginConfig, *, store: CAStore, session: TorrentSession, ring: HashRing, trackers=None, backing=None
) -> Flask:
    """`trackers` (a tracker.client.TrackerClient) has its metainfo caches warmed at commit."""
    app = Flask("origin")
    app.config["KRAKEN"] = config
    metrics = Metrics("origin")
    metrics.instrument(app)
    manager = BlobManager(
        store, session, ring, config.self_addr, config.replication,
        metrics=metrics.counter("kraken_origin_replications_total", "Replica pushes by result.", ["result"]),
        trackers=trackers,
        backing=backing,
    )
    upload_manager = UploadManager(store.uploads_dir, config.store.upload_ttl)
    metrics.torrent_gauges(session)
    app.extensions.update(blobs=manager, uploads=upload_manager, ring=ring)
    install_error_handler(app)
    trust_proxies(app, config.server.trusted_proxies)
    app.register_blueprint(health_blueprint({"disk": store.free_bytes}, metrics))
    app.register_blueprint(uploads.bp)
    app.register_blueprint(blobs.bp)

    manager.start()

    def sweep_uploads():
        while True:
            gevent.sleep(min(60.0, config.store.upload_ttl))
            upload_manager.sweep()

    sweeper = gevent.spawn(sweep_uploads)

    def shutdown():
        sweeper.kill(block=False)
        manager.stop()
        session.stop()

    app.kraken_shutdown = shutdown
    return app
