from __future__ import annotations

import gevent
from flask import Flask

from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics
from common.oci import install_registry_errors
from proxy.config import ProxyConfig
from proxy.manifests import ManifestStore
from proxy.uploads import UploadStore
from proxy.views import prefetch, registry


def create_app(config: ProxyConfig, *, origins, build_index) -> Flask:
    """`origins`: an origin.client.ClusterClient (blobs and manifests); `build_index`: a
    buildindex.client.BuildIndexClient (tags). Upload state lives in config.uploads.dir."""
    app = Flask("proxy")
    app.config["KRAKEN"] = config
    # Layers arrive streamed through request.stream; nothing may cap or buffer them.
    app.config["MAX_CONTENT_LENGTH"] = None
    metrics = Metrics("proxy")
    metrics.instrument(app)
    uploads = UploadStore(config.uploads.dir, config.uploads.ttl)
    manifests = ManifestStore(origins, build_index, uploads.scratch)
    app.extensions.update(origins=origins, build_index=build_index, uploads=uploads, manifests=manifests)
    install_error_handler(app)
    install_registry_errors(app)
    trust_proxies(app, config.server.trusted_proxies)
    app.register_blueprint(health_blueprint({"build_index": build_index.ping}, metrics))
    app.register_blueprint(registry.bp)
    app.register_blueprint(prefetch.bp)

    def sweep_uploads():
        while True:
            gevent.sleep(config.uploads.sweep_interval)
            try:
                uploads.sweep()
            except OSError as exc:
                app.logger.warning("sweeping uploads failed: %s", exc)

    sweeper = gevent.spawn(sweep_uploads)
    app.kraken_shutdown = lambda: sweeper.kill(block=False)
    return app
