from __future__ import annotations

from flask import Flask

from buildindex.config import BuildIndexConfig
from buildindex.replication import Replicator
from buildindex.tagstore import TagStore
from buildindex.tagtypes import TagTypes
from buildindex.views import listing, tags
from common.httputil import health_blueprint, install_error_handler, trust_proxies
from common.metrics import Metrics


def create_app(config: BuildIndexConfig, *, tag_store: TagStore, tag_types: TagTypes,
               replicator: Replicator, backend=None, metrics: Metrics | None = None) -> Flask:
    """`backend` is the storage backend for tags (buildindex.backing.TagBacking, or a test
    double): put_tag(name, digest), get_tag(name) -> Digest raising NotFound, optionally
    list_repo(repo) and start(); name is `repo:tag`. None keeps tags in Redis only."""
    app = Flask("buildindex")
    app.config["KRAKEN"] = config
    # `library//busybox` is an invalid name to refuse, not a path to tidy into another name.
    app.url_map.merge_slashes = False
    metrics = metrics or Metrics("buildindex")
    metrics.instrument(app)
    pending = metrics.gauge("kraken_buildindex_replication_pending", "Replication tasks queued or in flight.")
    pending.set_function(replicator.pending)
    app.extensions.update(
        tag_store=tag_store,
        tag_types=tag_types,
        tag_backend=backend,
        replicator=replicator,
        metrics_puts=metrics.counter("kraken_buildindex_tag_puts_total", "Tags written.", ["type"]),
        metrics_gets=metrics.counter("kraken_buildindex_tag_gets_total", "Tag lookups.", ["result"]),
    )
    install_error_handler(app)
    trust_proxies(app, config.server.trusted_proxies)
    app.register_blueprint(health_blueprint({"redis": tag_store.ping}, metrics))
    app.register_blueprint(tags.bp)
    app.register_blueprint(listing.bp)
    writer = backend.start() if hasattr(backend, "start") else None

    def shutdown():
        if writer is not None:
            writer.kill(block=False)
        # Lets the gunicorn worker's exit hook (common.server) drain the replication queue.
        replicator.stop()

    app.kraken_shutdown = shutdown
    return app
